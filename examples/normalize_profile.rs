//! normalize over one synthetic record, N times, for profilers and for the
//! allocation count in `make bench`'s report.
//!
//! ```text
//! cargo run --release --example normalize_profile -- adt 200000
//! valgrind --tool=callgrind target/release/examples/normalize_profile adt 2000
//! perf record target/release/examples/normalize_profile adt 300000
//! ```
//!
//! `adt` is the ADT A01 the criterion benchmark uses, `fhir` a FHIR
//! Patient. With `PARTS=1` it also times the HL7 parse alone, one key
//! digest, and a clone and drop of the outcomes. Prints time and heap
//! allocations per record; the allocator is the binary's (mimalloc), with a
//! thread-local counter in front (no atomics, so the timing stays honest).

use consentry_core::stage::{Body, InputMeta, NoState, Stage, StageInput};
use consentry_core::topology::Topology;
use consentry_stages::normalize::Normalize;
use consentry_synth::{fhir_patient, hl7_adt, patients, SynthConfig};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Instant;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// mimalloc, counting allocations and reallocations on this thread.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Mean microseconds per call of `f` over `n` calls.
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "adt".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let topology = Topology::load(std::path::Path::new("topology.yaml")).expect("topology.yaml");
    let cfg = SynthConfig::new(1, 1);
    let p = &patients(&cfg)[0];
    let (topic, bytes) = match what.as_str() {
        "adt" => ("ehr.hl7v2", hl7_adt(&cfg, p, "A01", 0).into_bytes()),
        "fhir" => ("ehr.fhir", fhir_patient(&cfg, p).to_string().into_bytes()),
        other => {
            eprintln!("unknown record kind {other}: adt or fhir");
            std::process::exit(2);
        }
    };
    let input = StageInput {
        meta: InputMeta {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            key: None,
            idempotency_key: Some("ik1-bench".into()),
            correlation_id: None,
            ..Default::default()
        },
        body: Body::Raw(bytes.clone()),
    };
    let normalize = Normalize::new(&topology);

    if std::env::var_os("PARTS").is_some() && what == "adt" {
        let parse = per_call(n, || {
            black_box(
                consentry_stages::normalize::hl7::parse(black_box(&bytes))
                    .map(|m| m.segment_count()),
            )
            .ok();
        });
        let key = per_call(n, || {
            black_box(consentry_core::keys::idempotency_key(
                "normalize",
                "2026.11-normalize.1",
                black_box("hl7v2:CSEHR:CS00000000A01"),
                None,
            ));
        });
        let outcomes = normalize.process(&input, &NoState);
        let clone_drop = per_call(n, || {
            black_box(black_box(&outcomes).clone());
        });
        println!("parse {parse:.2} us, one key {key:.2} us, clone+drop of the outcomes {clone_drop:.2} us");
    }

    let before = allocations();
    let mut outcomes = 0;
    let us = per_call(n, || {
        outcomes += black_box(normalize.process(black_box(&input), &NoState)).len();
    });
    let per_record = (allocations() - before) as f64 / n as f64;
    assert!(outcomes >= n, "every record yields an outcome");
    println!(
        "normalize {what}: {us:.2} us/record ({:.0} records/s), {per_record:.0} heap allocations/record",
        1e6 / us
    );
}
