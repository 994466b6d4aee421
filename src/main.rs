//! `orders`: serve the API, migrate, seed, or print the spec. See `orders --help`.

use std::process::ExitCode;

use clap::Parser;
use orders::{cli::Cli, config};

/// jemalloc rather than the system's allocator. Every request allocates and frees many small
/// buffers on two worker threads: with glibc's allocator that took a sixth of the service's CPU
/// under load (much of it consolidating its free lists), and memory freed after a burst stayed
/// with the process. Measured in one run, GET one order at 256 connections: 107 us of the
/// service's CPU a request with glibc, 70 us with jemalloc (mimalloc, whose settings can only
/// be made before the process starts, held 32 MiB idle).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: memory freed and not used again within a second
/// is handed back to the system by a thread of jemalloc's own (by default it keeps it ten
/// seconds, and only gives it back when it is next called), so an idle instance stays near
/// 19 MiB.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config::worker_threads(cli.settings.worker_threads, cores))
        .enable_all()
        .build()
        .expect("the runtime starts")
        .block_on(orders::cli::run(cli))
}
