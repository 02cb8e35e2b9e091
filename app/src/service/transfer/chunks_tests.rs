//! Chunk reading, sampling and in-place writes.
use super::*;

#[test]
fn read_then_stage_round_trips_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let mut bytes = vec![0u8; 300_000];
    for (i, b) in bytes.iter_mut().enumerate().take(100_000) {
        *b = (i * 7919 % 251) as u8;
    }
    std::fs::write(&disk, &bytes).unwrap();
    let range = 1000..250_000;
    let plain = Digest::of(&bytes[1000..250_000]);

    let read = read_chunk(&disk, &range, dir.path(), true).unwrap();
    assert_eq!(read.digest, plain);
    let (zpath, zdigest, zsize) = read.zstd.expect("zeros compress");
    let compressed = std::fs::read(&zpath).unwrap();
    assert_eq!(compressed.len() as u64, zsize);
    assert_eq!(Digest::of(&compressed), zdigest);
    // Deterministic: the same chunk makes the same blob.
    let again = read_chunk(&disk, &range, dir.path(), true).unwrap();
    assert_eq!(again.zstd.unwrap().1, zdigest);

    // Placed at offset 1000: pieces cover 1000..250_000 in order.
    let place_all = |zdigest: &Digest, plain: &Digest, size: u64| {
        let mut place = Place::new(1000, size, true).unwrap();
        let mut pieces = Vec::new();
        for piece in compressed.chunks(777) {
            pieces.extend(place.push(piece)?);
        }
        let (last, verdict) = place.finish(zdigest, plain)?;
        pieces.extend(last);
        Ok::<_, std::io::Error>((pieces, verdict))
    };
    let (pieces, verdict) = place_all(&zdigest, &plain, 249_000).unwrap();
    verdict.unwrap();
    let mut at = 1000;
    let mut rebuilt = Vec::new();
    for (offset, piece) in pieces {
        assert_eq!(offset, at);
        assert!(piece.len() <= PIECE);
        at += piece.len() as u64;
        rebuilt.extend_from_slice(&piece);
    }
    assert_eq!(rebuilt, &bytes[1000..250_000]);

    // A wrong plain digest is refused, naming it.
    let (_, verdict) = place_all(&zdigest, &zdigest, 249_000).unwrap();
    assert!(verdict.unwrap_err().contains("uncompressed"));

    // A chunk that decompresses past its size fails as it comes.
    let mut place = Place::new(0, 10, true).unwrap();
    assert!(place.push(&compressed).is_err());
}

/// Incompressible bytes (xorshift from `state`).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn a_plain_chunk_is_checked_by_its_one_digest() {
    let bytes = noise(3 * PIECE / 2, 0x51_7cc1_b727_220a);
    let digest = Digest::of(&bytes);
    let place_all = |bytes: &[u8], stored: &Digest, plain: &Digest| {
        let mut place = Place::new(4096, bytes.len() as u64, false).unwrap();
        let mut pieces = Vec::new();
        for piece in bytes.chunks(100_003) {
            pieces.extend(place.push(piece).unwrap());
        }
        let (last, verdict) = place.finish(stored, plain).unwrap();
        pieces.extend(last);
        (pieces, verdict)
    };
    let (pieces, verdict) = place_all(&bytes, &digest, &digest);
    verdict.unwrap();
    let offsets: Vec<u64> = pieces.iter().map(|(at, _)| *at).collect();
    assert_eq!(offsets, [4096, 4096 + PIECE as u64]);
    let rebuilt: Vec<u8> = pieces
        .iter()
        .flat_map(|(_, piece)| piece.to_vec())
        .collect();
    assert_eq!(rebuilt, bytes);

    // One flipped byte fails the stored digest, which names what came.
    let mut bad = bytes.clone();
    bad[PIECE] ^= 1;
    let (_, verdict) = place_all(&bad, &digest, &digest);
    let reason = verdict.unwrap_err();
    assert!(reason.contains(&Digest::of(&bad).to_string()), "{reason}");
    // A manifest whose plain digest differs from the stored one for an
    // uncompressed chunk is refused too.
    let other = Digest::of(b"other");
    let (_, verdict) = place_all(&bytes, &digest, &other);
    assert!(verdict.unwrap_err().contains("uncompressed"));
    let (_, verdict) = place_all(&bytes, &other, &digest);
    assert!(verdict.unwrap_err().contains("its bytes hash to"));
}

#[test]
fn random_chunks_are_not_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let bytes = noise(200_000, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(&disk, &bytes).unwrap();
    let read = read_chunk(&disk, &(0..200_000), dir.path(), true).unwrap();
    assert!(read.zstd.is_none());
    assert_eq!(read.digest, Digest::of(&bytes));
    // Only the disk is left: the spool file went.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(read_chunk(&disk, &(0..300_000), dir.path(), false).is_err());
    let short = read_chunk(&disk, &(0..300_000), dir.path(), true);
    assert!(
        short
            .err()
            .unwrap()
            .to_string()
            .contains("short of a chunk")
    );
}

#[test]
fn a_chunk_random_at_its_start_only_is_still_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let mut bytes = noise(1024 * 1024, 0x2545_f491_4f6c_dd1d);
    bytes.resize(4 * 1024 * 1024, 0);
    std::fs::write(&disk, &bytes).unwrap();
    let read = read_chunk(&disk, &(0..bytes.len() as u64), dir.path(), true).unwrap();
    let (_, _, zsize) = read.zstd.expect("three quarters are zeros");
    assert!(zsize < 2 * 1024 * 1024, "{zsize}");
    // The random quarter alone is not worth trying.
    let random = read_chunk(&disk, &(0..1024 * 1024), dir.path(), true).unwrap();
    assert!(random.zstd.is_none());
    assert_eq!(random.digest, Digest::of(&bytes[..1024 * 1024]));
}
