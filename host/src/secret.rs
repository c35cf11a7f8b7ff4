//! Keys and message authentication, for what one party writes and another
//! must be able to trust: the UI's CSRF tokens and a supervisor's record of
//! how its process ended.

use sha2::{Digest, Sha256};

/// 256 bits from the operating system's CSPRNG (uuid's v4 reads getrandom;
/// three of them hold 366 random bits).
pub fn random_key() -> [u8; 32] {
    let mut seed = Vec::with_capacity(48);
    for _ in 0..3 {
        seed.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    Sha256::digest(&seed).into()
}

/// RFC 2104 over SHA-256 (the key is one block or less).
pub fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 32-byte key or MAC from its hex form.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a forged MAC was right.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Whether two secrets are equal, in a time that says nothing about where
/// they differ (their digests are compared, whatever their lengths).
pub fn same_text(a: &str, b: &str) -> bool {
    same(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2_shape_and_hex_round_trips() {
        // RFC 4231 test case 2 uses a 4-byte key; padded with zeros to one
        // block it is the same key for HMAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(from_hex(&to_hex(&mac)), Some(mac));
        assert_eq!(from_hex("zz"), None);
        assert!(same(&mac, &mac));
        assert!(same_text("s3cret", "s3cret") && !same_text("s3cret", "s3cre"));
        assert!(!same(&mac, &key));
        assert_ne!(random_key(), random_key());
    }
}
