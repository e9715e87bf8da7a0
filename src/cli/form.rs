//! `multipart/form-data` bodies made whole in memory and sent as one buffer, for the
//! commands that upload photos (`enrol`, `search`, `import`, `bench search|enrol`).
//!
//! Why not reqwest's multipart form: its blocking client streams a form through a
//! channel in small chunks, which for a 2.3 MB phone photo added about 7 ms to a
//! search's latency over loopback (README, Performance: the server's middleware saw the
//! request 7–8 ms before its handler did; curl sends the same body in under 3 ms). The
//! photo is in memory already, so the body is made once and sent as it is.

use reqwest::blocking::RequestBuilder;
use reqwest::header::CONTENT_TYPE;

/// One part: a text field, or a file with its name.
struct Part {
    name: String,
    file_name: Option<String>,
    bytes: Vec<u8>,
}

/// A form being built: text fields and files, in the order added.
#[derive(Default)]
pub struct FormBody {
    parts: Vec<Part>,
}

impl FormBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text field.
    pub fn text(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parts.push(Part { name: name.into(), file_name: None, bytes: value.into().into_bytes() });
        self
    }

    /// Adds a file field.
    pub fn file(mut self, name: impl Into<String>, file_name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.parts.push(Part { name: name.into(), file_name: Some(file_name.into()), bytes });
        self
    }

    /// A boundary that occurs in no part (a photo could hold any bytes).
    fn boundary(&self) -> String {
        (0u64..)
            .map(|n| format!("facesearch-form-{n:016x}"))
            .find(|b| self.parts.iter().all(|p| memchr::memmem::find(&p.bytes, b.as_bytes()).is_none()))
            .unwrap_or_default()
    }

    /// The `Content-Type` header and the body.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let boundary = self.boundary();
        let mut body = Vec::with_capacity(self.parts.iter().map(|p| p.bytes.len() + 160).sum::<usize>() + 64);
        for part in &self.parts {
            body.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quoted(&part.name)).bytes(),
            );
            if let Some(file_name) = &part.file_name {
                body.extend(
                    format!("; filename=\"{}\"\r\nContent-Type: application/octet-stream", quoted(file_name)).bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(&part.bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }
}

/// A name inside a quoted header parameter, escaped as browsers do (the HTML standard's
/// form encoding): `"` as `%22`, CR as `%0D`, LF as `%0A`.
fn quoted(name: &str) -> String {
    name.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// Sending a [`FormBody`] as a request's body.
pub trait WithForm {
    fn form_body(self, form: &FormBody) -> Self;
}

impl WithForm for RequestBuilder {
    fn form_body(self, form: &FormBody) -> Self {
        let (content_type, body) = form.encode();
        self.header(CONTENT_TYPE, content_type).body(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a form as the server's own parser (axum's) reads it back.
    fn parsed(form: &FormBody) -> Vec<(String, Option<String>, Vec<u8>)> {
        use axum::extract::{FromRequest, Multipart};
        let (content_type, body) = form.encode();
        let request = axum::http::Request::builder()
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .expect("a request");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let mut multipart = Multipart::from_request(request, &()).await.expect("multipart");
            let mut fields = Vec::new();
            while let Some(field) = multipart.next_field().await.expect("a field") {
                let (name, file) =
                    (field.name().unwrap_or_default().to_string(), field.file_name().map(str::to_string));
                fields.push((name, file, field.bytes().await.expect("its bytes").to_vec()));
            }
            fields
        })
    }

    #[test]
    fn the_server_reads_back_every_field() {
        // A photo holding the first boundary tried, and bytes that look like a part's end.
        let mut photo: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        photo.extend(b"\r\n--facesearch-form-0000000000000000\r\n\r\n");
        let form = FormBody::new().text("target_index_ids", "a,b").file("source_image", "me \"1\".jpg", photo.clone());
        assert_eq!(form.boundary(), "facesearch-form-0000000000000001");
        assert_eq!(
            parsed(&form),
            vec![
                ("target_index_ids".to_string(), None, b"a,b".to_vec()),
                ("source_image".to_string(), Some("me %221%22.jpg".to_string()), photo),
            ]
        );
        // A file name with spaces and letters beyond ASCII goes as it is (UTF-8, as
        // browsers send it), and the server reads the same name back.
        let named = FormBody::new().file("image", "Zoë Ünal 1.jpg", vec![1, 2, 3]);
        assert_eq!(parsed(&named), vec![("image".to_string(), Some("Zoë Ünal 1.jpg".to_string()), vec![1, 2, 3])]);
        // Empty values and a file with no bytes are parts too.
        let empty = FormBody::new().text("name", "").file("image", "x.jpg", Vec::new());
        assert_eq!(
            parsed(&empty),
            vec![("name".to_string(), None, Vec::new()), ("image".to_string(), Some("x.jpg".to_string()), Vec::new())]
        );
    }
}
