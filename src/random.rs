//! Random bytes from the kernel's CSPRNG, fetched in blocks: one getrandom(2) per block
//! instead of one system call per AES-GCM IV or decision id.
//!
//! Every byte handed out comes straight from getrandom and is handed out once: it is
//! overwritten with zeros in the block as it leaves. Each thread keeps its own block, so
//! nothing is shared between threads. keygate never forks without exec, so no child can
//! inherit a block and repeat its bytes.

use std::cell::RefCell;

/// Bytes fetched per getrandom(2) call: 340 IVs of 12 bytes.
const BLOCK: usize = 4096;

struct Pool {
    bytes: Box<[u8; BLOCK]>,
    /// Bytes before `used` were handed out (and zeroed).
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool {
        bytes: Box::new([0; BLOCK]),
        used: BLOCK,
    });
}

/// Fills `out` with random bytes from the kernel. Requests larger than a block go to
/// getrandom directly.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > BLOCK / 4 {
        return getrandom::fill(out);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if BLOCK - pool.used < out.len() {
            getrandom::fill(pool.bytes.as_mut_slice())?;
            pool.used = 0;
        }
        let start = pool.used;
        let end = start + out.len();
        // Always in range (`out.len() <= BLOCK - used` was just ensured); never hand out
        // anything but fresh bytes if it were not.
        let taken = pool
            .bytes
            .get_mut(start..end)
            .ok_or(getrandom::Error::UNEXPECTED)?;
        out.copy_from_slice(taken);
        taken.fill(0);
        pool.used = end;
        Ok(())
    })
}

/// A random (version 4) UUID from [`fill`].
pub fn uuid_v4() -> Result<uuid::Uuid, getrandom::Error> {
    let mut bytes = [0u8; 16];
    fill(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bytes_are_never_handed_out_twice_across_refills() {
        // 12-byte draws across several blocks: no repeated IV, and the refill boundary
        // (4096 is not a multiple of 12) neither truncates nor repeats a draw.
        let mut seen = HashSet::new();
        for _ in 0..(BLOCK * 3 / 12 + 7) {
            let mut iv = [0u8; 12];
            fill(&mut iv).unwrap();
            assert_ne!(
                iv, [0u8; 12],
                "a zeroed (already used) slice was handed out"
            );
            assert!(seen.insert(iv), "repeated IV");
        }
    }

    #[test]
    fn large_requests_and_uuids() {
        let mut big = vec![0u8; BLOCK * 2];
        fill(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
        let (a, b) = (uuid_v4().unwrap(), uuid_v4().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
    }

    #[test]
    fn threads_draw_different_bytes() {
        let draw = || {
            let mut x = [0u8; 32];
            fill(&mut x).unwrap();
            x
        };
        let other = std::thread::spawn(draw).join().unwrap();
        assert_ne!(draw(), other);
    }
}
