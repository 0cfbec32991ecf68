//! GGUF metadata values ([`MetadataValue`]) and their conversions.

/// One metadata value of a GGUF file, in the type the file stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8 (UTF-8).
    String(String),
    /// GGUF type 9: values of one element type (arrays may nest).
    Array(Vec<MetadataValue>),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 12.
    F64(f64),
}

impl MetadataValue {
    /// The value as a `u64` when it is an integer of any width that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(u64::from(v)),
            Self::U16(v) => Some(u64::from(v)),
            Self::U32(v) => Some(u64::from(v)),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as an `i64` when it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(i64::from(v)),
            Self::I16(v) => Some(i64::from(v)),
            Self::I32(v) => Some(i64::from(v)),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as an `f64`: floats as they are, integers converted.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(f64::from(v)),
            Self::F64(v) => Some(v),
            // Integers above 2^53 round; metadata floats never hold such values.
            #[allow(clippy::cast_precision_loss)]
            _ => self.as_i64().map(|v| v as f64).or_else(|| self.as_u64().map(|v| v as f64)),
        }
    }

    /// The value as a `bool` when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string slice when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements when the value is an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(values) => Some(values),
            _ => None,
        }
    }

    /// The GGUF name of the value's type (`"u32"`, `"string"`, `"array"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MetadataValue as V;

    #[test]
    fn integer_conversions_accept_any_width_that_fits() {
        assert_eq!(V::U8(7).as_u64(), Some(7));
        assert_eq!(V::I32(-1).as_u64(), None);
        assert_eq!(V::I32(-1).as_i64(), Some(-1));
        assert_eq!(V::U64(u64::MAX).as_i64(), None);
        assert_eq!(V::U16(3).as_f64(), Some(3.0));
        assert_eq!(V::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(V::String("x".into()).as_u64(), None);
        assert_eq!(V::Bool(true).as_bool(), Some(true));
        assert_eq!(V::Array(vec![V::U8(1)]).as_array().map(<[V]>::len), Some(1));
    }
}
