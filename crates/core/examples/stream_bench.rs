//! Measures the replication client alone: streams a BASE_BACKUP and discards it, so the cost
//! of the protocol layer can be told apart from compression and encryption.
//! `cargo run --release --example stream_bench -- <socket-dir> <port>`

use std::time::Instant;

use pgvault_core::protocol::{BackupEvent, BaseBackupOptions, ConnParams, Connection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let host = args.get(1).cloned().unwrap_or_else(|| "/tmp/pgvault-bench".into());
    let port: u16 = args.get(2).map(|p| p.parse()).transpose()?.unwrap_or(55432);
    let params = ConnParams::new(host, port, "postgres");
    let mut conn = Connection::connect(&params, true).await?;
    let opts = BaseBackupOptions {
        tablespace_map: false,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = conn.base_backup(&opts).await?;
    let (mut bytes, mut messages) = (0u64, 0u64);
    while let Some(ev) = stream.next().await? {
        messages += 1;
        if let BackupEvent::ArchiveData(b) = ev {
            bytes += b.len() as u64;
        }
    }
    stream.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{bytes} bytes in {messages} messages, {secs:.2}s, {:.0} MB/s",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
