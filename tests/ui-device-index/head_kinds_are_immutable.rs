// The host copy that launches are checked against cannot drift from the uploaded one.
fn change(kinds: &mut flashgen::DeviceHeadKinds) {
    kinds.kinds[0] = flashgen::HeadKind::Dense;
}

fn main() {}
