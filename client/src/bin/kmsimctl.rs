//! `kmsimctl`: command-line access to a kmsim server. All logic is in
//! [`kmsim_client::cli`]; see `kmsimctl --help`.

fn main() -> std::process::ExitCode {
    kmsim_client::cli::main()
}
