//! Value checks behind the inline route constraints, with .NET's invariant-culture
//! rules (number styles, GUID and date/time shapes, UTF-16 lengths). Pure functions.

use std::str::FromStr;

/// .NET's `char.IsWhiteSpace` subset that number parsing skips (`NumberStyles` white).
pub(super) fn is_net_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | ' ')
}

pub(super) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `NumberStyles.Integer` with the invariant culture: optional white, one optional
/// leading sign, ASCII digits, range-checked.
pub(super) fn parse_integer<T: FromStr>(v: &str) -> Option<T> {
    v.trim_matches(is_net_space).parse().ok()
}

/// Scans `digits[,digits…][.digits]` with at least one digit. Group separators are
/// accepted (anywhere after the first integer digit, like .NET) only when `groups`.
/// Returns the integer digits and the unconsumed rest.
fn scan_mantissa(s: &str, groups: bool) -> Option<(String, &str)> {
    let mut int_digits = String::new();
    let mut frac_digits = 0;
    let mut seen_point = false;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' if seen_point => frac_digits += 1,
            '0'..='9' => int_digits.push(c),
            ',' if groups && !seen_point && !int_digits.is_empty() => {}
            '.' if !seen_point => seen_point = true,
            _ => {
                end = i;
                break;
            }
        }
    }
    (!int_digits.is_empty() || frac_digits > 0).then(|| (int_digits, &s[end..]))
}

fn strip_sign(s: &str) -> (bool, &str) {
    match s.strip_prefix(['+', '-']) {
        Some(rest) => (true, rest),
        None => (false, s),
    }
}

/// `decimal.TryParse(NumberStyles.Number, invariant)`: white, a leading or trailing
/// sign, group separators, a decimal point, no exponent; the integer part must fit.
pub(super) fn is_decimal(v: &str) -> bool {
    let t = v.trim_matches(is_net_space);
    let (leading, t) = strip_sign(t);
    let Some((int_digits, rest)) = scan_mantissa(t, true) else {
        return false;
    };
    let rest_ok = rest.is_empty() || (!leading && matches!(rest, "+" | "-"));
    if !rest_ok {
        return false;
    }
    const MAX: &str = "79228162514264337593543950335";
    let significant = int_digits.trim_start_matches('0');
    significant.len() < MAX.len() || (significant.len() == MAX.len() && significant <= MAX)
}

/// `double`/`float.TryParse(Float | AllowThousands, invariant)`: white, a leading sign,
/// group separators, a decimal point, an exponent, or the invariant NaN/Infinity names.
pub(super) fn is_float(v: &str) -> bool {
    let t = v.trim_matches(is_net_space);
    let (_, t) = strip_sign(t);
    if ["nan", "infinity", "∞"]
        .iter()
        .any(|name| t.eq_ignore_ascii_case(name))
    {
        return true;
    }
    let Some((_, rest)) = scan_mantissa(t, true) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(exponent) = rest.strip_prefix(['e', 'E']) else {
        return false;
    };
    let (_, digits) = strip_sign(exponent);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `Guid.TryParse` formats N (32 hex), D (8-4-4-4-12), B (`{D}`) and P (`(D)`).
/// The rarely used X format (`{0x…,{0x…}}`) is not accepted.
pub(super) fn is_guid(v: &str) -> bool {
    let t = v.trim_matches(is_net_space);
    let is_d = |s: &str| {
        s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    };
    let wrapped = |open: char, close: char| {
        t.strip_prefix(open)
            .and_then(|s| s.strip_suffix(close))
            .is_some_and(is_d)
    };
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        || is_d(t)
        || wrapped('{', '}')
        || wrapped('(', ')')
}

/// ASP.NET's file-name test: the last `/`-separated part contains a `.` followed
/// somewhere by a character that is not `.`.
pub(super) fn is_file_name(v: &str) -> bool {
    let last = v.rsplit('/').next().unwrap_or(v);
    last.find('.')
        .is_some_and(|dot| last[dot + 1..].chars().any(|c| c != '.'))
}

/// A practical subset of `DateTime.TryParse(invariant)`: numeric dates `yyyy-M-d`
/// (`-`, `/` or `.` separated) and `M/d/yyyy` / `M/d/yy`, optionally followed (after
/// `T` or white) by a time; or a time alone. A time is `H:mm[:ss[.fffffff]]`, an
/// optional AM/PM designator and an optional `Z` or `±hh[:mm]` offset. Textual month
/// names, which .NET also accepts, are not.
pub(super) fn is_datetime(v: &str) -> bool {
    let t = v.trim_matches(is_net_space);
    match parse_date(t) {
        Some("") => true,
        Some(rest) => {
            // A time must be separated from the date by `T` or white space.
            let time = match rest.strip_prefix('T') {
                Some(time) => time,
                None => {
                    let time = rest.trim_start_matches(is_net_space);
                    if time.len() == rest.len() {
                        return false;
                    }
                    time
                }
            };
            is_time(time)
        }
        None => is_time(t),
    }
}

/// Reads up to `max` ASCII digits; returns the value, the digit count and the rest.
fn digits(s: &str, max: usize) -> Option<(u32, usize, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    Some((s[..n].parse().ok()?, n, &s[n..]))
}

/// Parses a numeric date at the start of `s`; returns what follows it.
fn parse_date(s: &str) -> Option<&str> {
    let (first, first_len, rest) = digits(s, 4)?;
    let sep = rest
        .chars()
        .next()
        .filter(|c| matches!(c, '-' | '/' | '.'))?;
    let (second, _, rest) = digits(rest.strip_prefix(sep)?, 2)?;
    let (third, third_len, rest) = digits(rest.strip_prefix(sep)?, 4)?;
    let (year, month, day) = if first_len == 4 {
        (first, second, third)
    } else if third_len == 4 || third_len == 2 {
        // Two-digit years map into 1950–2049 (.NET's TwoDigitYearMax = 2049).
        let year = match (third_len, third) {
            (2, y) if y < 50 => 2000 + y,
            (2, y) => 1900 + y,
            (_, y) => y,
        };
        (year, first, second)
    } else {
        return None;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    ((1..=9999).contains(&year) && (1..=days).contains(&day)).then_some(rest)
}

/// Parses a whole time string: `H:mm[:ss[.f…]] [AM|PM] [Z|±hh[:mm]]`.
fn is_time(s: &str) -> bool {
    let Some((hour, _, rest)) = digits(s, 2) else {
        return false;
    };
    let Some((minute, 2, mut rest)) = rest.strip_prefix(':').and_then(|r| digits(r, 2)) else {
        return false;
    };
    let mut second = 0;
    if let Some(r) = rest.strip_prefix(':') {
        let Some((s, 2, r)) = digits(r, 2) else {
            return false;
        };
        second = s;
        rest = r;
        if let Some(r) = rest.strip_prefix('.') {
            let Some((_, _, r)) = digits(r, 7) else {
                return false;
            };
            rest = r;
        }
    }
    let rest = rest.trim_start_matches(is_net_space);
    let lower = rest.to_ascii_lowercase();
    let (twelve_hour, rest) = if lower.starts_with("am") || lower.starts_with("pm") {
        (true, rest[2..].trim_start_matches(is_net_space))
    } else {
        (false, rest)
    };
    let hour_ok = if twelve_hour { hour <= 12 } else { hour <= 23 };
    let zone_ok = match rest {
        "" | "Z" | "z" => true,
        _ => rest.strip_prefix(['+', '-']).is_some_and(|offset| {
            let offset = offset.replacen(':', "", 1);
            (offset.len() == 2 || offset.len() == 4)
                && offset.bytes().all(|b| b.is_ascii_digit())
                && offset[..2].parse::<u32>().is_ok_and(|h| h <= 14)
        }),
    };
    hour_ok && minute <= 59 && second <= 59 && zone_ok
}
