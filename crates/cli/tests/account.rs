//! `dpselft account`: the exact interface (JSON keys, errors and exit codes).

mod common;

use std::process::Output;

use common::json;

fn account(args: &[&str]) -> Output {
    common::dpselft(&[&["account"], args].concat())
}

#[test]
fn epsilon_for_sigma_json() {
    let out = account(&[
        "--sigma",
        "1.0",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let v = json(&out);
    let pld = v["epsilon"]["pld"].as_f64().unwrap();
    let rdp = v["epsilon"]["rdp"].as_f64().unwrap();
    // Google dp-accounting (PLD, 1e-4): 6.18774; RDP at order 4.1: 6.7127.
    assert!((pld - 6.1877).abs() < 0.01, "{pld}");
    assert!((rdp - 6.7127).abs() < 0.01, "{rdp}");
    assert_eq!(v["rdp_order"].as_f64(), Some(4.1));
    assert_eq!(v["delta"].as_f64(), Some(1e-5));
    assert_eq!(v["sampling_rate"].as_f64(), Some(0.01));
    assert_eq!(v["steps"].as_u64(), Some(10000));
    assert_eq!(v["sigma"].as_f64(), Some(1.0));
}

#[test]
fn calibration_json_and_epochs_form() {
    let out = account(&[
        "--target-epsilon",
        "3",
        "--dataset-size",
        "10000",
        "--batch-size",
        "100",
        "--epochs",
        "2",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(v["sampling_rate"].as_f64(), Some(0.01));
    assert_eq!(v["steps"].as_u64(), Some(200));
    let s_pld = v["sigma"]["pld"].as_f64().unwrap();
    let s_rdp = v["sigma"]["rdp"].as_f64().unwrap();
    assert!(s_pld > 0.0 && s_pld <= s_rdp, "{s_pld} {s_rdp}");
    assert!(v["epsilon"]["pld"].as_f64().unwrap() <= 3.0);
    assert!(v["epsilon"]["rdp"].as_f64().unwrap() <= 3.0);
}

#[test]
fn single_accountant_and_table() {
    let v = json(&account(&[
        "--sigma",
        "2",
        "--sampling-rate",
        "0.1",
        "--steps",
        "100",
        "--delta",
        "1e-6",
        "--accountant",
        "rdp",
        "--json",
    ]));
    assert!(v["epsilon"].get("pld").is_none());
    assert!(v["epsilon"]["rdp"].as_f64().is_some());
    let out = account(&[
        "--sigma",
        "2",
        "--sampling-rate",
        "0.1",
        "--steps",
        "100",
        "--delta",
        "1e-6",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pld") && text.contains("rdp"), "{text}");
}

#[test]
fn bad_input_exits_with_2_and_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--sigma",
                "0",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sigma",
        ),
        (
            &[
                "--sigma",
                "-1",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sigma",
        ),
        (
            &[
                "--sigma",
                "1",
                "--sampling-rate",
                "0",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling-rate",
        ),
        (
            &[
                "--sigma",
                "1",
                "--sampling-rate",
                "1.5",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling-rate",
        ),
        (
            &[
                "--sigma",
                "1",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "0",
            ],
            "delta",
        ),
        (
            &[
                "--sigma",
                "1",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1",
            ],
            "delta",
        ),
        (
            &[
                "--sigma",
                "1",
                "--sampling-rate",
                "0.01",
                "--steps",
                "0",
                "--delta",
                "1e-5",
            ],
            "steps",
        ),
        (
            &[
                "--target-epsilon",
                "0",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "target-epsilon",
        ),
        (
            &[
                "--target-epsilon",
                "-2",
                "--sampling-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "target-epsilon",
        ),
        (
            &[
                "--sigma",
                "1",
                "--dataset-size",
                "100",
                "--batch-size",
                "200",
                "--epochs",
                "1",
                "--delta",
                "1e-5",
            ],
            "batch size",
        ),
        (
            &["--sigma", "1", "--sampling-rate", "0.01", "--delta", "1e-5"],
            "--steps",
        ),
    ];
    for (args, needle) in cases {
        let out = account(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // clap's own errors (missing mode, both modes) also exit with 2.
    let out = account(&[
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
        "--delta",
        "1e-5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = account(&[
        "--sigma",
        "1",
        "--target-epsilon",
        "1",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
        "--delta",
        "1e-5",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_target_only_pld_reaches_is_answered_with_rdp_marked_unreachable() {
    let args = [
        "--target-epsilon",
        "1e-9",
        "--sampling-rate",
        "0.01",
        "--steps",
        "100",
        "--delta",
        "1e-5",
    ];
    let v = json(&account(&[&args[..], &["--json"]].concat()));
    let sigma = v["sigma"]["pld"].as_f64().unwrap();
    assert!(sigma > 1000.0, "{sigma}");
    assert!(v["sigma"].get("rdp").is_none());
    assert!(v["rdp_unreachable"].as_str().unwrap().contains("rdp"));
    // Asked for RDP alone, the failure is the answer.
    let rdp = account(&[&args[..], &["--accountant", "rdp"]].concat());
    assert!(!rdp.status.success());
}
