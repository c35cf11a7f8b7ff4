//! A plain WASI command: a valid component, but of the `wasi:cli/command` world.
fn main() {
    println!("hello from another world");
}
