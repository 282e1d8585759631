fn main() {
    std::process::exit(stallprobe::cli::main());
}
