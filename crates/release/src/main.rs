//! `wireleap-release`: release keys, signed release repositories, build stamps, a static
//! server for the devnet. Everything happens in [`wireleap_release::cli`].

fn main() -> std::process::ExitCode {
    wireleap_release::cli::main()
}
