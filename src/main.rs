//! The `keygate` binary: parse the command line, run, exit with a documented code.

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
