use super::Lang;

/// Chooses the template language from the dialogue's text: Chinese when at least a
/// fifth of its letters are CJK ideographs (so a Chinese dialogue quoting English
/// terms stays Chinese, and an English one quoting a few characters stays English).
pub fn detect_language(text: &str) -> Lang {
    let (mut cjk, mut letters) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
            letters += 1;
        } else if c.is_alphabetic() {
            letters += 1;
        }
    }
    if letters > 0 && cjk * 5 >= letters {
        Lang::Zh
    } else {
        Lang::En
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0xF900..=0xFAFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_and_english_and_mixed_text() {
        assert_eq!(
            detect_language("how do I make a walkway slippery?"),
            Lang::En
        );
        assert_eq!(detect_language("我需要找到一种方法"), Lang::Zh);
        // Chinese sentence quoting an English product name.
        assert_eq!(detect_language("请问 iPhone 的电池怎么更换？"), Lang::Zh);
        // English sentence quoting one Chinese word (3 of 30+ letters).
        assert_eq!(
            detect_language("What does 你好吗 mean in English, please explain it"),
            Lang::En
        );
        assert_eq!(detect_language("1234 !!"), Lang::En);
    }
}
