fn main() -> std::process::ExitCode {
    host::cli::run()
}
