// The host copy that launches are checked against cannot drift from the uploaded one.
fn change(list: &mut flashgen::DeviceBlockMask) {
    list.mask.kv_count[0] = 1_000;
}

fn main() {}
