//! The name an uploaded photo is stored and returned under.

/// A safe name to store and return for an uploaded file: the client's base name if it
/// is plain, else `face_image.EXT` from the detected format.
pub fn stored_file_name(client: Option<&str>, mime: &str) -> String {
    let base = client.and_then(|n| n.rsplit(['/', '\\']).next()).unwrap_or("");
    let plain = !base.is_empty()
        && base.len() <= 128
        && !base.starts_with('.')
        && base.chars().all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c));
    if plain {
        return base.to_string();
    }
    format!("face_image.{}", extension_of(mime))
}

/// The file extension of an image MIME type the service accepts (`img` for any other).
pub fn extension_of(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        "image/gif" => "gif",
        "image/tiff" => "tiff",
        _ => "img",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(stored_file_name(Some("john.jpg"), "image/jpeg"), "john.jpg");
        assert_eq!(stored_file_name(Some("C:\\photos\\john 2.png"), "image/png"), "john 2.png");
        assert_eq!(stored_file_name(Some("../../etc/passwd"), "image/jpeg"), "passwd");
        assert_eq!(stored_file_name(Some("<script>.jpg"), "image/jpeg"), "face_image.jpg");
        assert_eq!(stored_file_name(Some(".hidden"), "image/webp"), "face_image.webp");
        assert_eq!(stored_file_name(None, "image/png"), "face_image.png");
    }
}
