//! Release-mode measurements for choosing defaults: Argon2id unlock time for
//! several parameter sets, and object writer/reader throughput for the
//! codec/sealing combinations. Run: `cargo run --release --example bench`.

use std::io::{Read, Write};
use std::time::Instant;

use pgvault_core::format::{Codec, Compression, KdfParams, Keyring, ObjectReader, ObjectWriter};

/// ~3x-compressible data: text-like records with some random bytes mixed in.
fn corpus(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let words: [&[u8]; 8] = [
        b"INSERT ",
        b"UPDATE ",
        b"pgvault ",
        b"relation ",
        b"tuple ",
        b"0000 ",
        b"WAL ",
        b"xid ",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let r = next();
        if r % 16 < 2 {
            // random bytes (incompressible)
            for _ in 0..(r >> 8) % 6 + 1 {
                out.push(next() as u8);
            }
        } else {
            out.extend_from_slice(words[((r >> 8) % 8) as usize]);
            out.extend_from_slice(format!("{} ", (r >> 16) % 100_000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

fn main() {
    // `bench DUMP_PATH` writes the throughput corpus for comparison with the zstd CLI.
    if let Some(path) = std::env::args().nth(1) {
        std::fs::write(path, corpus(200_000_000)).expect("write corpus");
        return;
    }
    let pass = b"correct horse battery staple";
    println!("== Argon2id unlock time (median of 5) ==");
    for (m_mib, t, p) in [
        (8u32, 1u32, 1u32),
        (19, 2, 1),
        (32, 2, 1),
        (46, 1, 1),
        (64, 3, 1),
        (64, 3, 4),
    ] {
        let params = KdfParams {
            memory_kib: m_mib * 1024,
            iterations: t,
            parallelism: p,
        };
        let (kr, _) = Keyring::create(pass, params).expect("create");
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                kr.unlock(pass).expect("unlock");
                t0.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        println!("m={m_mib:>3} MiB t={t} p={p}: {:>7.1} ms", times[2]);
    }

    let size = 200_000_000;
    let data = corpus(size);
    let (_, key) = Keyring::create(
        pass,
        KdfParams {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
        },
    )
    .expect("create");
    println!(
        "\n== Object throughput, {} MB input (MB = 10^6 bytes) ==",
        size / 1_000_000
    );
    let configs = [
        ("zstd-3 w0", Compression::Zstd, 0),
        ("zstd-3 w2", Compression::Zstd, 2),
        ("none", Compression::None, 0),
    ];
    for (name, compression, workers) in configs {
        for sealed in [false, true] {
            let codec = Codec {
                compression,
                zstd_level: 3,
                zstd_workers: workers,
                ..Codec::default()
            };
            let k = if sealed { Some(&key) } else { None };
            let (mut best_w, mut best_r, mut ratio) = (0f64, 0f64, 0f64);
            for _round in 0..2 {
                let t0 = Instant::now();
                let mut w = ObjectWriter::new(Vec::with_capacity(size / 2), &codec, k).expect("writer");
                for piece in data.chunks(1 << 20) {
                    w.write_all(piece).expect("write");
                }
                let (obj, stats) = w.finish().expect("finish");
                let wt = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                let mut r = ObjectReader::new(obj.as_slice(), k).expect("reader");
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0usize;
                loop {
                    let n = r.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                let rt = t0.elapsed().as_secs_f64();
                assert_eq!(total, size);
                best_w = best_w.max(size as f64 / wt / 1e6);
                best_r = best_r.max(size as f64 / rt / 1e6);
                ratio = stats.plain_bytes as f64 / stats.stored_bytes as f64;
            }
            println!(
                "{name:<10} sealed={sealed:<5} ratio {ratio:>5.2}x  write {best_w:>7.1} MB/s  read {best_r:>7.1} MB/s (best of 2)"
            );
        }
    }
}
