//! A cheap pre-scan that bounds how deeply a YAML document nests flow
//! collections (`[` and `{`) before the real parser sees it. serde_norway
//! refuses more than 128 levels, but only after libyaml's scanner has read
//! the whole document, and that scanner is quadratic in flow depth (every
//! token re-checks every open level): 50 000 `[` kept the daemon busy for
//! minutes. The scan follows YAML's lexical rules closely enough that quoted
//! strings, comments and block scalars cannot hide brackets from it.

/// Deepest flow nesting accepted; the parser's own limit is the same.
pub const MAX_FLOW_DEPTH: usize = 128;

/// Whether `text` opens more than `max` flow collections at once.
pub(crate) fn flow_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // Indentation of the line that opened a block scalar (`key: |`): its
    // content, every more indented line, is text, not YAML.
    let mut block_parent: Option<usize> = None;
    for line in text.split('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_parent = None;
        }
        let mut prev = ' ';
        let mut escaped = false;
        let mut content_end = line.len();
        for (at, c) in line.char_indices() {
            match quote {
                Some('"') => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        quote = None;
                    }
                }
                Some(_) => {
                    if c == '\'' {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if prev.is_whitespace() => {
                        content_end = at;
                        break;
                    }
                    '"' | '\'' if prev.is_whitespace() || "[{,:-?".contains(prev) => {
                        quote = Some(c);
                    }
                    '[' | '{' => {
                        depth += 1;
                        if depth > max {
                            return true;
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if quote.is_none() && depth == 0 && opens_block_scalar(&line[..content_end]) {
            block_parent = Some(indent);
        }
    }
    false
}

/// Whether a line (without its comment) ends in a block scalar header:
/// `key: |`, `- >-`, `key: &anchor !!str |2`.
fn opens_block_scalar(line: &str) -> bool {
    let mut tokens = line.split_whitespace().rev();
    let Some(header) = tokens.next() else {
        return false;
    };
    let mut chars = header.chars();
    if !matches!(chars.next(), Some('|' | '>'))
        || !chars.all(|c| c == '-' || c == '+' || c.is_ascii_digit())
    {
        return false;
    }
    for token in tokens {
        if token.starts_with('&') || token.starts_with('!') {
            continue;
        }
        return token.ends_with(':') || token == "-" || token == "?";
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_nesting_only() {
        assert!(!flow_depth_exceeds("a: [[[x]]]\n", 3));
        assert!(flow_depth_exceeds("a: [[[[x]]]]\n", 3));
        assert!(!flow_depth_exceeds("a: [x] \nb: [y]\nc: {d: [e]}\n", 2));
        // Brackets in strings, comments and block scalars are text.
        assert!(!flow_depth_exceeds("a: \"[[[[\"\nb: '{{{{'\n# [[[[\n", 1));
        assert!(!flow_depth_exceeds(
            "a: |\n  [[[[\n  if [ -f x ]\nb: 1\n",
            1
        ));
        assert!(!flow_depth_exceeds("- >-\n    {{{{\n", 1));
        assert!(!flow_depth_exceeds("a: it's [x]\n", 1));
    }

    #[test]
    fn strings_and_block_scalars_cannot_hide_nesting() {
        // A quote opened inside a block scalar is text there, not a string.
        assert!(flow_depth_exceeds("a: |\n  'x\nb: [[[[1]]]]\n", 3));
        // Closing brackets inside strings do not close anything.
        assert!(flow_depth_exceeds(
            "[ \"]\", [ \"]\", [ \"]\", [ 1 ]]]]\n",
            3
        ));
        assert!(flow_depth_exceeds("a: \"\\\" [\" \nb: [[[[1]]]]\n", 3));
        let bomb = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(flow_depth_exceeds(&bomb, MAX_FLOW_DEPTH));
    }
}
