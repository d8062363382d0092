//! Console line formatting without core::fmt: a fixed buffer that always starts with the
//! `lancet-guest: ` prefix the tests parse, and is printed with one ring-0 request.

use crate::user;

const LINE_CAPACITY: usize = 200;
const PREFIX: &[u8] = b"lancet-guest: ";

/// One console line under construction (truncated silently at `LINE_CAPACITY`).
pub struct Line {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
}

impl Line {
    pub fn new() -> Self {
        let mut line = Line {
            bytes: [0; LINE_CAPACITY],
            len: 0,
        };
        line.raw(PREFIX);
        line
    }

    fn raw(&mut self, data: &[u8]) -> &mut Self {
        for &byte in data {
            // Keep two bytes for "\n\0".
            if self.len + 2 < LINE_CAPACITY {
                self.bytes[self.len] = byte;
                self.len += 1;
            }
        }
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.raw(text.as_bytes())
    }

    pub fn dec(&mut self, mut value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (value % 10) as u8;
            count += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        while count > 0 {
            count -= 1;
            self.raw(&[digits[count]]);
        }
        self
    }

    /// `0x` followed by exactly `width` lower-case hex digits.
    pub fn hex(&mut self, value: u64, width: u32) -> &mut Self {
        self.raw(b"0x");
        self.hex_digits(value, width)
    }

    fn hex_digits(&mut self, value: u64, width: u32) -> &mut Self {
        let mut shift = width * 4;
        while shift > 0 {
            shift -= 4;
            let digit = ((value >> shift) & 0xf) as u8;
            self.raw(&[if digit < 10 {
                b'0' + digit
            } else {
                b'a' + digit - 10
            }]);
        }
        self
    }

    pub fn mac(&mut self, mac: &[u8; 6]) -> &mut Self {
        for (i, &byte) in mac.iter().enumerate() {
            if i > 0 {
                self.raw(b":");
            }
            self.hex_digits(u64::from(byte), 2);
        }
        self
    }

    pub fn ip(&mut self, ip: &[u8; 4]) -> &mut Self {
        for (i, &byte) in ip.iter().enumerate() {
            if i > 0 {
                self.raw(b".");
            }
            self.dec(u64::from(byte));
        }
        self
    }

    /// Terminates the line and prints it.
    pub fn print(&mut self) {
        self.bytes[self.len] = b'\n';
        self.bytes[self.len + 1] = 0;
        user::print_cstr(&self.bytes[..self.len + 2]);
    }
}
