//! A checkpoint's chat template: `chat_template.jinja` or `tokenizer_config.json`'s
//! `chat_template`, rendered with minijinja under the settings and Python string methods
//! Hugging Face renders with (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
//! `strftime_now`), so a checkpoint's system header or date line comes out as its authors
//! wrote it. The judge renders (problem, steps) with it; the trainer renders prompts.

use std::path::Path;

use minijinja::{Environment, context};

use super::ModelError;

/// A checkpoint's chat template, compiled once.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

fn token_str(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// From `chat_template.jinja` or `tokenizer_config.json`'s `chat_template`, else `fallback`.
    pub fn load(dir: &Path, fallback: Option<&str>) -> Result<Option<ChatTemplate>, ModelError> {
        let cfg: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(s) => serde_json::from_str(&s)
                    .map_err(|e| ModelError::Load(format!("tokenizer_config.json: {e}")))?,
                Err(_) => serde_json::Value::Null,
            };
        let src = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(s) => Some(s),
            Err(_) => match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // a list of named templates: take "default"
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                _ => None,
            },
        };
        let Some(src) = src.or_else(|| fallback.map(String::from)) else {
            return Ok(None);
        };
        let mut env = Environment::new();
        // Hugging Face renders with these Jinja settings and Python string methods.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::Load(format!("chat template: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // Llama 3.2+ templates print today's date.
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_utc(&fmt)
        });
        env.add_template_owned("chat", src)
            .map_err(|e| ModelError::Load(format!("chat template: {e}")))?;
        Ok(Some(ChatTemplate {
            env,
            bos: token_str(cfg.get("bos_token")),
            eos: token_str(cfg.get("eos_token")),
        }))
    }

    pub fn render(&self, messages: &[(&str, &str)]) -> Result<String, ModelError> {
        self.render_with(messages, false)
    }

    /// As [`ChatTemplate::render`]; with `add_generation_prompt` the template opens the
    /// assistant's turn (what a sampler continues).
    pub fn render_with(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let msgs: Vec<_> = messages
            .iter()
            .map(|&(role, content)| context! { role => role, content => content })
            .collect();
        let t = self.env.get_template("chat").map_err(tmpl_err)?;
        t.render(context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(tmpl_err)
    }
}

/// `strftime` on the current UTC time, for the directives chat templates use
/// (`%d %b %B %Y %m %y %H %M %S %%`); others are kept as written.
fn strftime_utc(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    format_date(fmt, secs)
}

fn format_date(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // days since 1970-01-01 -> civil date (Howard Hinnant's algorithm)
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn tmpl_err(e: minijinja::Error) -> ModelError {
    ModelError::Template(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{ChatTemplate, format_date};

    /// Llama 3.2-style templates call strftime_now and raise_exception; both exist.
    #[test]
    fn templates_with_date_and_exception_calls_render() {
        let dir = std::env::temp_dir().join(format!("stepkto-tmpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tmpl = "{{ bos_token }}{% if messages|length == 0 %}{{ raise_exception('empty') }}{% endif %}Today: {{ strftime_now('%d %b %Y') }}\n{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}{% endfor %}";
        let cfg = serde_json::json!({"chat_template": tmpl, "bos_token": {"content": "<s>"}});
        std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let t = ChatTemplate::load(&dir, None).unwrap().unwrap();
        let out = t.render(&[("user", "  hi  ")]).unwrap();
        assert!(out.starts_with("<s>Today: "), "{out}");
        assert!(out.ends_with("<user>hi"), "{out}");
        let err = t.render(&[]).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dates_format_like_python_strftime() {
        // 2024-07-26 13:08:29 UTC (checked with Python's datetime)
        assert_eq!(format_date("%d %b %Y", 1_722_000_000 - 691), "26 Jul 2024");
        assert_eq!(
            format_date("%Y-%m-%d %H:%M:%S %%", 1_721_999_309),
            "2024-07-26 13:08:29 %"
        );
        assert_eq!(format_date("%d %B %y", 951_782_400), "29 February 00");
    }
}
