//! What a transcribed page is written as: plain text, JSON (for scripts and the HTTP API),
//! hOCR 1.2 and ALTO 4 (for document tools: search layers, viewers, archives). A multi-page input
//! (a TIFF scan) is one document in one file per format, as Tesseract writes it: text pages end in
//! a form feed, hOCR has an `ocr_page` and ALTO a `Page` per page, JSON a `pages` array.

use std::fmt::Write;
use std::str::FromStr;

use crate::setting::UnknownChoice;

use serde_json::{Value, json};

use super::line_detector::LineBox;
use super::page::PageTranscript;

/// An output format of `textrec transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Txt,
    Json,
    Hocr,
    Alto,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Txt,
        OutputFormat::Json,
        OutputFormat::Hocr,
        OutputFormat::Alto,
    ];

    /// The output file's extension (`page.png` → `page.hocr`, …).
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Txt => "txt",
            OutputFormat::Json => "json",
            OutputFormat::Hocr => "hocr",
            OutputFormat::Alto => "alto.xml",
        }
    }

    /// The document (one page per image page) in this format; `source` is the input's name as
    /// the user gave it.
    pub fn render(self, pages: &[PageTranscript], source: &str, model: &str) -> String {
        match self {
            OutputFormat::Txt => document_text(pages),
            OutputFormat::Json => {
                let json = match pages {
                    [page] => to_json(page, source, model),
                    pages => document_json(pages, source, model),
                };
                let mut text =
                    serde_json::to_string_pretty(&json).expect("a transcript serialises");
                text.push('\n');
                text
            }
            OutputFormat::Hocr => to_hocr(pages, source, model),
            OutputFormat::Alto => to_alto(pages, source, model),
        }
    }
}

/// Pages' text; in a multi-page document each page ends with a form feed (as Tesseract's).
fn document_text(pages: &[PageTranscript]) -> String {
    match pages {
        [page] => page.text(),
        pages => pages.iter().map(|p| p.text() + "\u{c}").collect(),
    }
}

impl FromStr for OutputFormat {
    type Err = UnknownChoice;
    fn from_str(name: &str) -> Result<OutputFormat, UnknownChoice> {
        match name.trim() {
            "txt" | "text" => Ok(OutputFormat::Txt),
            "json" => Ok(OutputFormat::Json),
            "hocr" => Ok(OutputFormat::Hocr),
            "alto" => Ok(OutputFormat::Alto),
            other => Err(UnknownChoice {
                setting: "output format",
                given: other.to_owned(),
                choices: &["txt", "json", "hocr", "alto"],
            }),
        }
    }
}

/// The JSON document: the page, its lines with boxes, words and confidences, the text, the
/// model, and the time spent.
pub fn to_json(page: &PageTranscript, source: &str, model: &str) -> Value {
    json!({
        "source": source,
        "model": model,
        "width": page.width,
        "height": page.height,
        "text": page.text(),
        "lines": page.lines,
        "decoder": page.decoder,
        "ms": {"detect": page.detect_ms, "recognize": page.recognize_ms},
    })
}

/// A multi-page document: every page as [`to_json`] has it (less source and model), numbered from 1.
fn document_json(pages: &[PageTranscript], source: &str, model: &str) -> Value {
    let text = document_text(pages);
    let pages: Vec<Value> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let mut json = to_json(page, source, model);
            let object = json.as_object_mut().expect("a page is an object");
            object.remove("source");
            object.remove("model");
            object.insert("page".into(), json!(i + 1));
            json
        })
        .collect();
    json!({
        "source": source,
        "model": model,
        "text": text,
        "pages": pages,
    })
}

/// Text as XML 1.0 character data or an attribute value. Tab, line feed and carriage return
/// become character references, so an attribute keeps them (a parser turns literal ones into
/// spaces); the characters XML 1.0 forbids even as references (the other C0 controls, U+FFFE,
/// U+FFFF), which a file name may hold, become U+FFFD, so the document stays well-formed.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

fn hocr_bbox(b: &LineBox) -> String {
    format!("bbox {} {} {} {}", b.x0, b.y0, b.x1, b.y1)
}

/// The smallest box around `boxes`, or the whole page when there are none.
fn union(boxes: impl Iterator<Item = LineBox>, page: &PageTranscript) -> LineBox {
    boxes
        .reduce(|a, b| LineBox {
            x0: a.x0.min(b.x0),
            y0: a.y0.min(b.y0),
            x1: a.x1.max(b.x1),
            y1: a.y1.max(b.y1),
        })
        .unwrap_or(LineBox {
            x0: 0,
            y0: 0,
            x1: page.width,
            y1: page.height,
        })
}

/// hOCR 1.2: XHTML with `ocr_page` → `ocr_carea` → `ocr_par` → `ocr_line` → `ocrx_word`,
/// confidences as `x_wconf` (0–100), as Tesseract writes it; one `ocr_page` per page. The
/// metadata the specification recommends is there too: the page count, and `unknown` (as it
/// allows) for the languages and scripts, which a bundle does not declare.
pub fn to_hocr(pages: &[PageTranscript], source: &str, model: &str) -> String {
    let mut out = String::new();
    let title = xml_escape(source);
    let _ = write!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>{title}</title>
  <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>
  <meta name="ocr-system" content="textrec {version} ({model})"/>
  <meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf"/>
  <meta name="ocr-number-of-pages" content="{count}"/>
  <meta name="ocr-langs" content="unknown"/>
  <meta name="ocr-scripts" content="unknown"/>
 </head>
 <body>
"#,
        version = env!("CARGO_PKG_VERSION"),
        model = xml_escape(model),
        count = pages.len(),
    );
    for (index, page) in pages.iter().enumerate() {
        let p = index + 1;
        let area = hocr_bbox(&union(page.lines.iter().map(|l| l.bbox), page));
        let _ = write!(
            out,
            r#"  <div class="ocr_page" id="page_{p}" title="image &quot;{title}&quot;; bbox 0 0 {w} {h}; ppageno {index}">
   <div class="ocr_carea" id="block_{p}_1" title="{area}">
    <p class="ocr_par" id="par_{p}_1" title="{area}">
"#,
            w = page.width,
            h = page.height,
        );
        for (i, line) in page.lines.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"     <span class="ocr_line" id="line_{p}_{n}" title="{bbox}; x_wconf {conf}">"#,
                n = i + 1,
                bbox = hocr_bbox(&line.bbox),
                conf = (line.confidence * 100.0).round() as u32,
            );
            for (j, word) in line.words.iter().enumerate() {
                let _ = writeln!(
                    out,
                    r#"      <span class="ocrx_word" id="word_{p}_{n}_{m}" title="{bbox}; x_wconf {conf}">{text}</span>"#,
                    n = i + 1,
                    m = j + 1,
                    bbox = hocr_bbox(&word.bbox),
                    conf = (word.confidence * 100.0).round() as u32,
                    text = xml_escape(&word.text),
                );
            }
            out.push_str("     </span>\n");
        }
        out.push_str("    </p>\n   </div>\n  </div>\n");
    }
    out.push_str(" </body>\n</html>\n");
    out
}

fn alto_position(b: &LineBox) -> String {
    format!(
        r#"HPOS="{}" VPOS="{}" WIDTH="{}" HEIGHT="{}""#,
        b.x0,
        b.y0,
        b.width(),
        b.height()
    )
}

/// ALTO 4.2 in pixels: `Page` → `PrintSpace` → `TextBlock` → `TextLine` → `String`/`SP`, word
/// confidence as `WC` (0–1); one `Page` per page. The software is named in a `Processing`
/// step, as ALTO 4 has it (its `OCRProcessing` is deprecated). A line read as no words has no
/// `TextLine`: ALTO's holds at least one `String`. `tests/schemas/alto-4-subset.xsd` is what
/// this writes.
pub fn to_alto(pages: &[PageTranscript], source: &str, model: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.loc.gov/standards/alto/ns-v4# http://www.loc.gov/standards/alto/v4/alto-4-2.xsd" SCHEMAVERSION="4.2">
  <Description>
    <MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation>
      <fileName>{source}</fileName>
    </sourceImageInformation>
    <Processing ID="OCR_0">
      <processingCategory>contentGeneration</processingCategory>
      <processingSoftware>
        <softwareName>textrec</softwareName>
        <softwareVersion>{version} ({model})</softwareVersion>
      </processingSoftware>
    </Processing>
  </Description>
  <Layout>
"#,
        source = xml_escape(source),
        version = env!("CARGO_PKG_VERSION"),
        model = xml_escape(model),
    );
    for (index, page) in pages.iter().enumerate() {
        let p = index + 1;
        let all = LineBox {
            x0: 0,
            y0: 0,
            x1: page.width,
            y1: page.height,
        };
        let block = union(page.lines.iter().map(|l| l.bbox), page);
        let _ = write!(
            out,
            r#"    <Page ID="page_{p}" PHYSICAL_IMG_NR="{p}" WIDTH="{w}" HEIGHT="{h}">
      <PrintSpace {all}>
        <TextBlock ID="block_{p}" {block}>
"#,
            w = page.width,
            h = page.height,
            all = alto_position(&all),
            block = alto_position(&block),
        );
        for (i, line) in page.lines.iter().enumerate() {
            if line.words.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                r#"          <TextLine ID="line_{p}_{n}" {pos}>"#,
                n = i + 1,
                pos = alto_position(&line.bbox),
            );
            for (j, word) in line.words.iter().enumerate() {
                if j > 0 {
                    out.push_str("            <SP/>\n");
                }
                let _ = writeln!(
                    out,
                    r#"            <String ID="string_{p}_{n}_{m}" {pos} WC="{wc:.2}" CONTENT="{text}"/>"#,
                    n = i + 1,
                    m = j + 1,
                    pos = alto_position(&word.bbox),
                    wc = word.confidence,
                    text = xml_escape(&word.text),
                );
            }
            out.push_str("          </TextLine>\n");
        }
        out.push_str("        </TextBlock>\n      </PrintSpace>\n    </Page>\n");
    }
    out.push_str("  </Layout>\n</alto>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::page::{PageLine, PageWord};

    fn page() -> PageTranscript {
        let bbox = LineBox {
            x0: 10,
            y0: 20,
            x1: 110,
            y1: 40,
        };
        PageTranscript {
            width: 200,
            height: 100,
            lines: vec![PageLine {
                bbox,
                text: "a<b & \"c\"".into(),
                confidence: 0.5,
                words: vec![
                    PageWord {
                        bbox: LineBox { x1: 50, ..bbox },
                        text: "a<b".into(),
                        confidence: 0.25,
                    },
                    PageWord {
                        bbox: LineBox { x0: 60, ..bbox },
                        text: "&".into(),
                        confidence: 1.0,
                    },
                ],
            }],
            decoder: "greedy",
            detect_ms: 1.0,
            recognize_ms: 2.0,
        }
    }

    #[test]
    fn formats_parse_by_name_and_name_their_files() {
        assert_eq!("hocr".parse(), Ok(OutputFormat::Hocr));
        assert!(
            "pdf"
                .parse::<OutputFormat>()
                .unwrap_err()
                .to_string()
                .contains("txt, json")
        );
        assert_eq!(OutputFormat::Alto.extension(), "alto.xml");
    }

    #[test]
    fn text_escapes_in_markup_and_json_carries_boxes() {
        let page = page();
        assert_eq!(
            OutputFormat::Txt.render(std::slice::from_ref(&page), "p.png", "m"),
            "a<b & \"c\"\n"
        );
        let hocr = OutputFormat::Hocr.render(std::slice::from_ref(&page), "p&q.png", "m");
        assert!(
            hocr.contains(r#"title="bbox 10 20 110 40; x_wconf 50""#),
            "{hocr}"
        );
        assert!(hocr.contains(">a&lt;b</span>") && hocr.contains(">&amp;</span>"));
        assert!(hocr.contains("image &quot;p&amp;q.png&quot;"));
        let alto = OutputFormat::Alto.render(std::slice::from_ref(&page), "p.png", "m");
        assert!(
            alto.contains(
                r#"HPOS="10" VPOS="20" WIDTH="40" HEIGHT="20" WC="0.25" CONTENT="a&lt;b""#
            ),
            "{alto}"
        );
        assert_eq!(alto.matches("<SP/>").count(), 1);
        let json: Value = serde_json::from_str(&OutputFormat::Json.render(
            std::slice::from_ref(&page),
            "p.png",
            "m",
        ))
        .unwrap();
        assert_eq!(json["lines"][0]["box"]["x0"], 10);
        assert_eq!(json["lines"][0]["words"][1]["text"], "&");
        assert_eq!(json["text"], "a<b & \"c\"\n");
    }

    #[test]
    fn control_characters_in_a_file_name_leave_hocr_and_alto_well_formed() {
        let source = "p\u{1}\tq\u{1b}\u{ffff}.png";
        for format in [OutputFormat::Hocr, OutputFormat::Alto] {
            let markup = format.render(std::slice::from_ref(&page()), source, "m\u{7}");
            let forbidden: Vec<char> = markup
                .chars()
                .filter(|&c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
                .collect();
            assert!(forbidden.is_empty(), "{format:?} holds {forbidden:?}");
            assert!(
                markup.contains("p\u{fffd}&#9;q\u{fffd}\u{fffd}.png"),
                "{format:?}: {markup}"
            );
            assert!(markup.contains("(m\u{fffd})"), "{format:?}: {markup}");
        }
    }

    #[test]
    fn a_line_read_as_no_words_is_an_hocr_line_but_no_alto_text_line() {
        let mut page = page();
        page.lines.push(PageLine {
            bbox: LineBox {
                x0: 10,
                y0: 50,
                x1: 110,
                y1: 70,
            },
            text: String::new(),
            confidence: 0.0,
            words: Vec::new(),
        });
        let pages = std::slice::from_ref(&page);
        let hocr = OutputFormat::Hocr.render(pages, "p.png", "m");
        assert!(hocr.contains(r#"id="line_1_2" title="bbox 10 50 110 70; x_wconf 0""#));
        let alto = OutputFormat::Alto.render(pages, "p.png", "m");
        assert_eq!(alto.matches("<TextLine ").count(), 1, "{alto}");
        assert!(!alto.contains("line_1_2"), "{alto}");
    }

    #[test]
    fn a_multi_page_document_is_one_file_with_every_page() {
        let pages = [
            page(),
            PageTranscript {
                width: 300,
                ..page()
            },
        ];
        let text = OutputFormat::Txt.render(&pages, "scan.tif", "m");
        assert_eq!(text, "a<b & \"c\"\n\u{c}a<b & \"c\"\n\u{c}");
        let hocr = OutputFormat::Hocr.render(&pages, "scan.tif", "m");
        assert_eq!(hocr.matches(r#"class="ocr_page""#).count(), 2);
        assert!(hocr.contains(r#"<meta name="ocr-number-of-pages" content="2"/>"#));
        assert!(hocr.contains(
            r#"id="page_2" title="image &quot;scan.tif&quot;; bbox 0 0 300 100; ppageno 1""#
        ));
        assert!(
            hocr.contains(r#"id="word_2_1_2""#),
            "ids are unique across pages"
        );
        let alto = OutputFormat::Alto.render(&pages, "scan.tif", "m");
        assert!(alto.contains(r#"<Page ID="page_2" PHYSICAL_IMG_NR="2" WIDTH="300""#));
        assert!(alto.contains(r#"<String ID="string_2_1_2""#));
        let json: Value =
            serde_json::from_str(&OutputFormat::Json.render(&pages, "scan.tif", "m")).unwrap();
        assert_eq!(json["source"], "scan.tif");
        assert_eq!(json["pages"][1]["page"], 2);
        assert_eq!(json["pages"][1]["width"], 300);
        assert_eq!(json["pages"][0]["lines"][0]["box"]["x0"], 10);
        assert_eq!(json["text"], text);
    }
}
