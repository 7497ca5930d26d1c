//! The `tpgate` binary: everything is in the library (`tpgate::cli`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tpgate::cli::main()
}
