//! The operation language both drivers run, its random generator and its
//! text form.
//!
//! A program has greenlets `g0..=gN`; `g0` is the main greenlet and every
//! other `gK` has a body, a script of operations it runs when it is switched
//! into, resuming where it left off (greenlets are stackful, so a driver
//! only has to interpret the script in the body function). `g0`'s script is
//! the program's main line. Each `gK` (K ≥ 1) is created by exactly one `new`
//! operation somewhere in some script; an operation naming a greenlet that
//! does not exist (yet, or any more in the table) is traced as `nog`.
//!
//! The text form is one block per program, one script per line, operations
//! separated by spaces and their fields by `:`:
//!
//! ```text
//! program 17
//! greenlets 1
//! g0 new:1:0 sw:1:5:c q:1 del:1
//! g1 sw:0:6:p ret:7
//! end
//! ```
//!
//! The generator is deterministic in its seed (a splitmix64-seeded
//! xorshift64*), so a program is named by its seed; Python only ever sees
//! the text.

use std::fmt::{self, Write as _};

/// What a body does with an error (`exit`, `thrown`, `panic`) that a switch
/// or throw returned: record it and carry on, or end the body with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Record the outcome and run the next operation.
    Catch,
    /// End the body with the error (Python: re-raise; Rust: return the
    /// `Err`, or resume the panic).
    Propagate,
}

/// One operation, run by the current greenlet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create `gK` with parent `gP` (the current greenlet if `gP` is not in
    /// the table).
    New { k: usize, parent: usize },
    /// `gK.switch(value)`.
    Switch {
        k: usize,
        value: i64,
        handler: Handler,
    },
    /// `gK.throw(Thrown(tag))`.
    Throw {
        k: usize,
        tag: i64,
        handler: Handler,
    },
    /// `gK.throw(GreenletExit)`.
    ThrowExit { k: usize, handler: Handler },
    /// Trace `gK`'s started, dead, active and parent.
    Query { k: usize },
    /// Trace which greenlet `getcurrent()` is.
    Current,
    /// Drop the table's handle to `gK` (the last one, if nothing else holds
    /// it: then a suspended `gK` is killed).
    Drop { k: usize },
    /// `gK.parent = gP`.
    SetParent { k: usize, parent: usize },
    /// End the body, returning `value` to the parent.
    Return { value: i64 },
    /// End the body with the error `Thrown(tag)`.
    Raise { tag: i64 },
    /// End the body with a panic (Python: the exception `Panic(tag)`).
    Panic { tag: i64 },
    /// End the body by raising `GreenletExit` (Rust: `Err(Exit)`).
    Exit,
    /// End the body returning the last value it received, which may be the
    /// `GreenletExit` instance of an exited child (Rust: `Err(Exited)`).
    ReturnLast,
    /// Install (`true`) or remove the tracer, which traces every switch and
    /// throw as `trace EVENT ORIGIN TARGET`.
    Trace { on: bool },
    /// Install a tracer that traces the next event and then panics with
    /// `tag` (Python: raises `Panic(tag)`), which removes it.
    TracePanic { tag: i64 },
}

impl Op {
    /// True for the operations that end a body.
    pub fn ends_body(&self) -> bool {
        matches!(
            self,
            Op::Return { .. } | Op::Raise { .. } | Op::Panic { .. } | Op::Exit | Op::ReturnLast
        )
    }
}

/// A program: `scripts[0]` is main's, `scripts[k]` is `gK`'s body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The seed it was generated from (0 for a hand-written one).
    pub seed: u64,
    /// One script per greenlet, main first.
    pub scripts: Vec<Vec<Op>>,
}

impl Program {
    /// The number of non-main greenlets.
    pub fn greenlets(&self) -> usize {
        self.scripts.len() - 1
    }

    /// The value a body returns when its script runs out.
    pub fn fall_value(k: usize) -> i64 {
        900 + k as i64
    }
}

// ---------------------------------------------------------------------------
// Random generation

/// xorshift64*, seeded through splitmix64: small, fast, and the same
/// everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole output depends on `seed` only.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 33) % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The seed of program number `index` of a run whose base seed is `base`.
pub fn program_seed(base: u64, index: u64) -> u64 {
    Rng::new(base ^ index.wrapping_mul(0xA076_1D64_78BD_642F)).next_u64()
}

/// Generates the program named by `seed`.
pub fn generate(seed: u64) -> Program {
    let mut rng = Rng::new(seed);
    let n = 1 + rng.below(5);
    // Values and tags come from one counter, so a trace shows where each
    // one went.
    let mut counter = 0i64;
    let mut scripts = Vec::with_capacity(n + 1);
    for k in 0..=n {
        let len = if k == 0 {
            2 + rng.below(12)
        } else {
            rng.below(9)
        };
        let mut script = Vec::with_capacity(len + 1);
        for _ in 0..len {
            script.push(random_op(&mut rng, n, k == 0, &mut counter));
        }
        scripts.push(script);
    }
    // A third of the programs are traced from the start; a few turn the
    // tracer on or off on the way.
    if rng.chance(33) {
        scripts[0].insert(0, Op::Trace { on: true });
    }
    for _ in 0..2 {
        if rng.chance(10) {
            let k = rng.below(n + 1);
            let at = rng.below(scripts[k].len() + 1);
            let on = rng.chance(50);
            scripts[k].insert(at, Op::Trace { on });
        }
    }
    if rng.chance(8) {
        let k = rng.below(n + 1);
        let at = rng.below(scripts[k].len() + 1);
        counter += 1;
        scripts[k].insert(at, Op::TracePanic { tag: counter });
    }
    for k in 1..=n {
        // Mostly made by main, otherwise by another body (which may never
        // run, leaving `gK` unmade).
        let owner = if rng.chance(55) { 0 } else { rng.below(n + 1) };
        let owner = if owner == k { 0 } else { owner };
        let parent = rng.below(n + 1);
        let script: &mut Vec<Op> = &mut scripts[owner];
        // Early in main, so that most programs use most of their greenlets.
        let at = if owner == 0 {
            rng.below(script.len().min(3) + 1)
        } else {
            rng.below(script.len() + 1)
        };
        script.insert(at, Op::New { k, parent });
    }
    Program { seed, scripts }
}

fn random_op(rng: &mut Rng, n: usize, main: bool, counter: &mut i64) -> Op {
    let mut next = || {
        *counter += 1;
        *counter
    };
    let handler = if main || rng.chance(50) {
        Handler::Catch
    } else {
        Handler::Propagate
    };
    let k = rng.below(n + 1);
    // Weights; main never ends its script early.
    let table: &[(usize, u8)] = if main {
        &[(34, 0), (8, 1), (6, 2), (10, 3), (3, 4), (9, 5), (7, 6)]
    } else {
        &[
            (30, 0),
            (8, 1),
            (6, 2),
            (10, 3),
            (3, 4),
            (8, 5),
            (6, 6),
            (5, 7),
            (4, 8),
            (4, 9),
            (3, 10),
            (3, 11),
        ]
    };
    let total: usize = table.iter().map(|(w, _)| w).sum();
    let mut pick = rng.below(total);
    let mut kind = 0;
    for &(w, op) in table {
        if pick < w {
            kind = op;
            break;
        }
        pick -= w;
    }
    match kind {
        0 => Op::Switch {
            k,
            value: next(),
            handler,
        },
        1 => Op::Throw {
            k,
            tag: next(),
            handler,
        },
        2 => Op::ThrowExit { k, handler },
        3 => Op::Query { k },
        4 => Op::Current,
        5 => Op::Drop {
            k: 1 + rng.below(n),
        },
        6 => Op::SetParent {
            k,
            parent: rng.below(n + 1),
        },
        7 => Op::Return { value: next() },
        8 => Op::Raise { tag: next() },
        9 => Op::Panic { tag: next() },
        10 => Op::Exit,
        _ => Op::ReturnLast,
    }
}

// ---------------------------------------------------------------------------
// Text form

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handler::Catch => "c",
            Handler::Propagate => "p",
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::New { k, parent } => write!(f, "new:{k}:{parent}"),
            Op::Switch { k, value, handler } => write!(f, "sw:{k}:{value}:{handler}"),
            Op::Throw { k, tag, handler } => write!(f, "th:{k}:{tag}:{handler}"),
            Op::ThrowExit { k, handler } => write!(f, "tx:{k}:{handler}"),
            Op::Query { k } => write!(f, "q:{k}"),
            Op::Current => f.write_str("cur"),
            Op::Drop { k } => write!(f, "del:{k}"),
            Op::SetParent { k, parent } => write!(f, "par:{k}:{parent}"),
            Op::Return { value } => write!(f, "ret:{value}"),
            Op::Raise { tag } => write!(f, "raise:{tag}"),
            Op::Panic { tag } => write!(f, "panic:{tag}"),
            Op::Exit => f.write_str("exit"),
            Op::ReturnLast => f.write_str("retlast"),
            Op::Trace { on } => write!(f, "tr:{}", on as u8),
            Op::TracePanic { tag } => write!(f, "tp:{tag}"),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "program {}", self.seed)?;
        writeln!(f, "greenlets {}", self.greenlets())?;
        for (k, script) in self.scripts.iter().enumerate() {
            let mut line = format!("g{k}");
            for op in script {
                write!(line, " {op}")?;
            }
            writeln!(f, "{line}")?;
        }
        writeln!(f, "end")
    }
}

fn parse_op(word: &str) -> Result<Op, String> {
    let fields: Vec<&str> = word.split(':').collect();
    let int = |i: usize| -> Result<i64, String> {
        fields
            .get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad operation `{word}`"))
    };
    let index = |i: usize| int(i).map(|v| v as usize);
    let handler = |i: usize| match fields.get(i) {
        Some(&"c") => Ok(Handler::Catch),
        Some(&"p") => Ok(Handler::Propagate),
        _ => Err(format!("bad handler in `{word}`")),
    };
    Ok(match fields[0] {
        "new" => Op::New {
            k: index(1)?,
            parent: index(2)?,
        },
        "sw" => Op::Switch {
            k: index(1)?,
            value: int(2)?,
            handler: handler(3)?,
        },
        "th" => Op::Throw {
            k: index(1)?,
            tag: int(2)?,
            handler: handler(3)?,
        },
        "tx" => Op::ThrowExit {
            k: index(1)?,
            handler: handler(2)?,
        },
        "q" => Op::Query { k: index(1)? },
        "cur" => Op::Current,
        "del" => Op::Drop { k: index(1)? },
        "par" => Op::SetParent {
            k: index(1)?,
            parent: index(2)?,
        },
        "ret" => Op::Return { value: int(1)? },
        "raise" => Op::Raise { tag: int(1)? },
        "panic" => Op::Panic { tag: int(1)? },
        "exit" => Op::Exit,
        "retlast" => Op::ReturnLast,
        "tr" => Op::Trace { on: int(1)? != 0 },
        "tp" => Op::TracePanic { tag: int(1)? },
        _ => return Err(format!("unknown operation `{word}`")),
    })
}

/// Parses programs in the text form (blank lines and `#` comments between
/// blocks are ignored).
pub fn parse(text: &str) -> Result<Vec<Program>, String> {
    let mut programs = Vec::new();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    while let Some(line) = lines.next() {
        let seed = line
            .strip_prefix("program ")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected `program SEED`, got `{line}`"))?;
        let n: usize = lines
            .next()
            .and_then(|l| l.strip_prefix("greenlets "))
            .and_then(|s| s.parse().ok())
            .ok_or("expected `greenlets N`")?;
        let mut scripts = Vec::with_capacity(n + 1);
        for k in 0..=n {
            let line = lines.next().ok_or("program ends early")?;
            let mut words = line.split_whitespace();
            if words.next() != Some(format!("g{k}").as_str()) {
                return Err(format!("expected the script of g{k}, got `{line}`"));
            }
            scripts.push(words.map(parse_op).collect::<Result<Vec<_>, _>>()?);
        }
        if lines.next() != Some("end") {
            return Err("expected `end`".into());
        }
        programs.push(Program { seed, scripts });
    }
    Ok(programs)
}
