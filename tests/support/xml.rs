//! A strict reader of the small XML documents dispatch writes (JUnit reports), so the tests
//! check them as a CI system reads them, without an XML crate: elements, attributes, text and
//! the XML declaration. Anything that is not well-formed XML 1.0 is an error: a tag that does
//! not close in order, a `<` or `&` that starts no markup or entity, an attribute without
//! quotes or given twice, a character XML forbids, text outside the root.

/// An element: its name, attributes, child elements and text (entities decoded).
#[derive(Debug)]
pub struct Element {
    /// The tag name.
    pub name: String,
    /// Attributes in order, values decoded.
    pub attributes: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// The text directly inside it, decoded.
    pub text: String,
}

impl Element {
    /// The value of attribute `name`; panics naming it when there is none.
    #[track_caller]
    pub fn attr(&self, name: &str) -> &str {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("<{}> has no attribute {name}: {self:?}", self.name))
    }

    /// The children named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses a whole document: an optional XML declaration, one root element, whitespace.
pub fn parse(xml: &str) -> Result<Element, String> {
    if let Some(c) = xml
        .chars()
        .find(|&c| !matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..))
    {
        return Err(format!("XML 1.0 forbids the character {c:?}"));
    }
    let mut rest = xml;
    if rest.starts_with("<?xml") {
        let end = rest.find("?>").ok_or("the XML declaration does not end")?;
        rest = &rest[end + 2..];
    }
    let (root, rest) = element(rest.trim_start())?;
    if !rest.trim().is_empty() {
        return Err(format!("text after the root element: {rest:?}"));
    }
    Ok(root)
}

fn is_name(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// One element at the start of `input`, and what follows it.
fn element(input: &str) -> Result<(Element, &str), String> {
    let rest = input
        .strip_prefix('<')
        .ok_or("an element must start with <")?;
    let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() {
        return Err(format!(
            "a tag without a name at {:?}",
            &input[..input.len().min(40)]
        ));
    }
    let mut rest = &rest[end..];
    let mut el = Element {
        name: name.to_owned(),
        attributes: Vec::new(),
        children: Vec::new(),
        text: String::new(),
    };
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', '\n', '\r']);
        if let Some(after) = trimmed.strip_prefix("/>") {
            return Ok((el, after));
        }
        if let Some(after) = trimmed.strip_prefix('>') {
            rest = after;
            break;
        }
        if trimmed.len() == rest.len() {
            return Err(format!("<{name}>: attributes must be separated by space"));
        }
        let end = trimmed.find(|c: char| !is_name(c)).unwrap_or(trimmed.len());
        let attr = &trimmed[..end];
        let after = trimmed[end..]
            .strip_prefix('=')
            .ok_or_else(|| format!("<{name}>: attribute {attr:?} has no value"))?;
        let quote = after
            .chars()
            .next()
            .filter(|q| matches!(q, '"' | '\''))
            .ok_or_else(|| format!("<{name}>: the value of {attr} is not quoted"))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| format!("<{name}>: the value of {attr} does not end"))?;
        let raw = &after[1..1 + close];
        if raw.contains('<') {
            return Err(format!("<{name}>: a raw < in the value of {attr}"));
        }
        if attr.is_empty() || el.attributes.iter().any(|(n, _)| n == attr) {
            return Err(format!(
                "<{name}>: attribute {attr:?} is empty or given twice"
            ));
        }
        el.attributes.push((attr.to_owned(), decode(raw)?));
        rest = &after[close + 2..];
    }
    loop {
        let next = rest
            .find('<')
            .ok_or_else(|| format!("<{name}> does not close"))?;
        el.text.push_str(&decode(&rest[..next])?);
        rest = &rest[next..];
        if let Some(after) = rest.strip_prefix("</") {
            let after = after
                .strip_prefix(name)
                .and_then(|a| a.trim_start().strip_prefix('>'))
                .ok_or_else(|| {
                    format!(
                        "<{name}> is closed by another tag: {:?}",
                        &rest[..rest.len().min(40)]
                    )
                })?;
            return Ok((el, after));
        }
        let (child, after) = element(rest)?;
        el.children.push(child);
        rest = after;
    }
}

/// `raw` text or attribute value with its entities decoded; a `&` that starts none, or a `>`
/// after `]]`, is an error.
fn decode(raw: &str) -> Result<String, String> {
    if raw.contains("]]>") {
        return Err("]]> in text".to_owned());
    }
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').ok_or("a & that starts no entity")?;
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = entity
                    .strip_prefix("#x")
                    .map(|h| u32::from_str_radix(h, 16))
                    .or_else(|| entity.strip_prefix('#').map(str::parse))
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
                    .map_err(|_| format!("bad character reference &{entity};"))?;
                char::from_u32(code).ok_or_else(|| format!("bad character reference &{entity};"))?
            }
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn the_reader_refuses_what_is_not_well_formed() {
    assert!(parse(r#"<a x="1"><b>t &amp; &lt;u&gt;</b><c/></a>"#).is_ok());
    for bad in [
        "<a><b></a></b>",
        "<a>x < y</a>",
        "<a>x & y</a>",
        "<a x=1/>",
        r#"<a x="1" x="2"/>"#,
        "<a>\u{1b}</a>",
        "<a/><b/>",
        "<a>]]></a>",
        r#"<a x="<"/>"#,
    ] {
        assert!(parse(bad).is_err(), "{bad:?} passed");
    }
    let doc = parse("<?xml version=\"1.0\"?>\n<a n='&#x41;&#66;'>\n  <b>one\ntwo</b>\n</a>\n")
        .expect("well-formed");
    assert_eq!(doc.attr("n"), "AB");
    assert_eq!(doc.child("b").map(|b| b.text.as_str()), Some("one\ntwo"));
}
