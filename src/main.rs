fn main() {
    let _ = sluice::proto::DESCRIPTOR_SET.len();
}
