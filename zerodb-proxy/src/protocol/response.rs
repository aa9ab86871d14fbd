//! Where does a response end?
//!
//! [`ResponseParser`] is fed the backend's frames one at a time, in order,
//! and answers whether more are to come. It reads only what it must: the
//! first byte of each logical packet, column counts, and the status flags of
//! OK/EOF packets. Rows and column definitions are never decoded, so they
//! can be relayed to the client as the bytes they arrived as.

use super::frame::MAX_FRAME;
use super::packets::{eof_status, ok_status, read_lenenc, u16_at, u32_at};
use super::status;
use thiserror::Error;

/// What kind of response the command that was sent produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY: OK, ERR, LOCAL INFILE request or (several) text result sets.
    Query,
    /// COM_STMT_EXECUTE: OK, ERR or binary result sets. With `cursor` (the
    /// request asked for a read-only cursor) a result whose metadata ends
    /// with SERVER_STATUS_CURSOR_EXISTS has its rows fetched later with
    /// COM_STMT_FETCH. Without it, that flag only says a stored program
    /// holds a cursor open, and rows follow as usual.
    Execute {
        /// The request asked for a read-only cursor.
        cursor: bool,
    },
    /// COM_STMT_FETCH: rows then a terminator.
    Fetch,
    /// COM_FIELD_LIST: column definitions then a terminator.
    FieldList,
    /// COM_STMT_PREPARE: PREPARE_OK with parameter and column definitions.
    Prepare,
    /// One packet: OK, ERR or EOF (PING, INIT_DB, RESET_CONNECTION, …), or
    /// the plain string COM_STATISTICS answers with.
    Single,
}

/// What the parser says after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More frames belong to this response.
    More,
    /// That frame was the last one.
    Done,
    /// The server asks the client for a local file (LOAD DATA LOCAL): the
    /// client's file packets must be relayed, then parsing goes on.
    LocalInfile,
}

/// A response that breaks the protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResponseError {
    /// A packet, named by the string, could not be parsed.
    #[error("malformed {0} from the server")]
    Malformed(&'static str),
    /// A frame came after the response had ended.
    #[error("frame after the response had ended")]
    AfterEnd,
}

/// The parts of a PREPARE_OK the proxy needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    /// The statement's id, for later commands on it.
    pub statement_id: u32,
    /// How many columns its result has.
    pub columns: u16,
    /// How many parameters it takes.
    pub params: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Rows,
    PrepareColumns(u16),
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    First,
    Defs { left: u64, then: After },
    DefsEof { then: After },
    Rows,
    FieldDefs,
    Done,
}

/// Incremental parser of one response. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseParser {
    kind: ResponseKind,
    deprecate_eof: bool,
    /// MariaDB's metadata caching is on: see [`Self::with_cache_metadata`].
    cache_metadata: bool,
    /// MariaDB's progress reports are on: see [`Self::with_progress`].
    progress: bool,
    state: State,
    /// The previous frame was full: this one continues the same packet.
    continuing: bool,
    status: Option<u16>,
    prepare: Option<PrepareOk>,
    error: bool,
}

impl ResponseParser {
    /// A parser for a response of `kind`, on a connection that agreed on
    /// `CLIENT_DEPRECATE_EOF` if `deprecate_eof`.
    pub fn new(kind: ResponseKind, deprecate_eof: bool) -> Self {
        let state = match kind {
            ResponseKind::Fetch => State::Rows,
            ResponseKind::FieldList => State::FieldDefs,
            _ => State::First,
        };
        Self {
            kind,
            deprecate_eof,
            cache_metadata: false,
            progress: false,
            state,
            continuing: false,
            status: None,
            prepare: None,
            error: false,
        }
    }

    /// For a connection that agreed on MariaDB's metadata caching
    /// (`caps::mariadb::CACHE_METADATA`): every column count is followed by
    /// a byte saying whether column definitions follow. Without them, the
    /// EOF that would end them is still sent unless EOF is deprecated.
    pub fn with_cache_metadata(mut self, on: bool) -> Self {
        self.cache_metadata = on;
        self
    }

    /// For a connection that agreed on MariaDB's progress reports
    /// (`caps::mariadb::PROGRESS`): a packet that starts `FF FF FF` (an
    /// ERR with code 0xFFFF) is a report on the running statement, part of
    /// its response rather than its end.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Status flags of the last OK/EOF packet seen, if any.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The PREPARE_OK header, once seen.
    pub fn prepare_ok(&self) -> Option<PrepareOk> {
        self.prepare
    }

    /// Whether the response ended with (or contained) an ERR packet.
    pub fn saw_error(&self) -> bool {
        self.error
    }

    /// Whether the whole response has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the next frame fed is a result set's column definition.
    pub fn expects_column_def(&self) -> bool {
        matches!(
            self.state,
            State::Defs {
                then: After::Rows,
                ..
            }
        ) && !self.continuing
    }

    /// Whether the next frame fed is (the start of) a result set row.
    pub fn expects_row(&self) -> bool {
        self.state == State::Rows && !self.continuing
    }

    /// Whether a frame of `len` payload bytes starting with `first`, fed
    /// when the parser [expects a row](Self::expects_row), is a plain row:
    /// a whole packet that starts with neither an ERR's 0xFF nor the 0xFE
    /// of a terminator (or of a row over 16 MiB). Feeding it would change
    /// nothing, so a relay may pass it without; that is most frames of a
    /// large result.
    #[inline]
    pub fn plain_row(first: u8, len: usize) -> bool {
        len != 0 && len < MAX_FRAME && first < 0xfe
    }

    /// Whether the frame being fed starts a logical packet (rather than
    /// continuing one over 16 MiB).
    pub fn at_packet_start(&self) -> bool {
        !self.continuing
    }

    fn is_terminator(&self, p: &[u8], frame_len: usize) -> bool {
        p.first() == Some(&0xfe)
            && if self.deprecate_eof {
                frame_len < MAX_FRAME
            } else {
                frame_len < 9
            }
    }

    fn terminator_status(&self, p: &[u8]) -> Result<u16, ResponseError> {
        let s = if self.deprecate_eof {
            ok_status(p)
        } else {
            eof_status(p)
        };
        s.ok_or(ResponseError::Malformed("EOF packet"))
    }

    fn end_of_result(&mut self, status: u16) -> Step {
        self.status = Some(status);
        if status & status::MORE_RESULTS_EXISTS != 0
            && matches!(
                self.kind,
                ResponseKind::Query | ResponseKind::Execute { .. }
            )
        {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }

    fn after_defs(&mut self, then: After) -> Step {
        match then {
            After::Rows => self.state = State::Rows,
            After::PrepareColumns(n) => {
                self.state = State::Defs {
                    left: u64::from(n),
                    then: After::End,
                }
            }
            After::End => {
                self.state = State::Done;
                return Step::Done;
            }
        }
        Step::More
    }

    fn defs_then(&mut self, left: u64, then: After) -> Step {
        if left > 0 {
            self.state = State::Defs { left, then };
            Step::More
        } else if self.deprecate_eof {
            self.after_defs(then)
        } else {
            self.state = State::DefsEof { then };
            Step::More
        }
    }

    /// Feeds one whole physical frame's payload. `p` is that payload.
    pub fn feed(&mut self, p: &[u8]) -> Result<Step, ResponseError> {
        let frame_len = p.len();
        if self.continuing {
            self.continuing = frame_len == MAX_FRAME;
            return Ok(if self.state == State::Done && !self.continuing {
                Step::Done
            } else {
                Step::More
            });
        }
        self.continuing = frame_len == MAX_FRAME;
        let step = self.packet(p, frame_len)?;
        // A logical packet that ends the response but spans frames ends only
        // with its last frame.
        Ok(if step == Step::Done && self.continuing {
            Step::More
        } else {
            step
        })
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one match over the states of a response reads as the protocol describes it; every relayed terminator and header goes through it"
    )]
    fn packet(&mut self, p: &[u8], frame_len: usize) -> Result<Step, ResponseError> {
        let first = *p.first().ok_or(ResponseError::Malformed("empty packet"))?;
        if first == 0xff {
            if self.progress && p.get(1..3) == Some(&[0xff, 0xff]) && self.state != State::Done {
                return Ok(Step::More);
            }
            self.error = true;
            return Ok(match self.state {
                State::Done => return Err(ResponseError::AfterEnd),
                // An ERR ends any response, whatever came before it.
                _ => {
                    self.state = State::Done;
                    Step::Done
                }
            });
        }
        match self.state {
            State::Done => Err(ResponseError::AfterEnd),
            State::First => match self.kind {
                ResponseKind::Single => {
                    if first == 0x00 {
                        self.status = ok_status(p);
                    } else if first == 0xfe && frame_len < 9 {
                        self.status = eof_status(p);
                    }
                    self.state = State::Done;
                    Ok(Step::Done)
                }
                ResponseKind::Prepare => {
                    if first != 0x00 {
                        return Err(ResponseError::Malformed("PREPARE_OK"));
                    }
                    let ok = PrepareOk {
                        statement_id: u32_at(p, 1).ok_or(ResponseError::Malformed("PREPARE_OK"))?,
                        columns: u16_at(p, 5).ok_or(ResponseError::Malformed("PREPARE_OK"))?,
                        params: u16_at(p, 7).ok_or(ResponseError::Malformed("PREPARE_OK"))?,
                    };
                    self.prepare = Some(ok);
                    let cols_then = if ok.columns > 0 {
                        After::PrepareColumns(ok.columns)
                    } else {
                        After::End
                    };
                    if ok.params > 0 {
                        Ok(self.defs_then(u64::from(ok.params), cols_then))
                    } else {
                        Ok(self.after_defs(cols_then))
                    }
                }
                ResponseKind::Query | ResponseKind::Execute { .. } => {
                    if first == 0x00 {
                        let s = ok_status(p).ok_or(ResponseError::Malformed("OK packet"))?;
                        return Ok(self.end_of_result(s));
                    }
                    // LOAD DATA LOCAL, run as a query or (MariaDB) a
                    // prepared statement: the server asks for the file.
                    if first == 0xfb {
                        return Ok(Step::LocalInfile);
                    }
                    if first == 0xfe && frame_len < 9 {
                        let s = eof_status(p).ok_or(ResponseError::Malformed("EOF packet"))?;
                        return Ok(self.end_of_result(s));
                    }
                    let malformed = || ResponseError::Malformed("column count");
                    let (n, used) = read_lenenc(p).ok_or_else(malformed)?;
                    let defs = match (self.cache_metadata, p.get(used..)) {
                        (false, Some([])) | (true, Some([1])) => n,
                        (true, Some([0])) => 0,
                        _ => return Err(malformed()),
                    };
                    if n == 0 {
                        return Err(malformed());
                    }
                    Ok(self.defs_then(defs, After::Rows))
                }
                ResponseKind::Fetch | ResponseKind::FieldList => {
                    Err(ResponseError::Malformed("response start"))
                }
            },
            State::Defs { left, then } => Ok(self.defs_then(left - 1, then)),
            State::DefsEof { then } => {
                if !(first == 0xfe && frame_len < 9) {
                    return Err(ResponseError::Malformed("EOF after column definitions"));
                }
                let s = self.terminator_status(p)?;
                self.status = Some(s);
                if then == After::Rows
                    && self.kind == (ResponseKind::Execute { cursor: true })
                    && s & status::CURSOR_EXISTS != 0
                {
                    // A cursor was opened: rows come with COM_STMT_FETCH.
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                Ok(self.after_defs(then))
            }
            State::Rows => {
                if self.is_terminator(p, frame_len) {
                    let s = self.terminator_status(p)?;
                    Ok(self.end_of_result(s))
                } else {
                    Ok(Step::More)
                }
            }
            State::FieldDefs => {
                if self.is_terminator(p, frame_len) {
                    self.status = Some(self.terminator_status(p)?);
                    self.state = State::Done;
                    Ok(Step::Done)
                } else {
                    Ok(Step::More)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packets::{eof, err, ok};
    use proptest::prelude::*;

    fn run(
        kind: ResponseKind,
        deprecate: bool,
        packets: &[Vec<u8>],
    ) -> (Vec<Step>, ResponseParser) {
        let mut p = ResponseParser::new(kind, deprecate);
        let steps = packets.iter().map(|x| p.feed(x).unwrap()).collect();
        (steps, p)
    }

    /// Byte for byte what MariaDB 10.11 answered a connection with
    /// metadata caching on: a prepared statement's second execution skips
    /// the column definitions (flag 0), and without deprecated EOF still
    /// sends the EOF that would have ended them; a text result says 1.
    #[test]
    fn cached_metadata_skips_column_definitions() {
        let row = b"\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x01q".to_vec();
        for deprecate in [true, false] {
            let end = eof(0x0002, deprecate);
            let mut skipped = vec![vec![2, 0]];
            if !deprecate {
                skipped.push(eof(0x0002, false));
            }
            skipped.extend([row.clone(), end.clone()]);
            let mut sent = vec![vec![2, 1], coldef(), coldef()];
            if !deprecate {
                sent.push(eof(0x0002, false));
            }
            sent.extend([row.clone(), end.clone()]);
            for (kind, pk) in [
                (ResponseKind::Execute { cursor: false }, &skipped),
                (ResponseKind::Execute { cursor: false }, &sent),
                (ResponseKind::Query, &sent),
            ] {
                let mut p = ResponseParser::new(kind, deprecate).with_cache_metadata(true);
                let steps: Vec<Step> = pk.iter().map(|x| p.feed(x).unwrap()).collect();
                assert_eq!(
                    steps.last(),
                    Some(&Step::Done),
                    "{deprecate} {kind:?} {pk:?}"
                );
                assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
                assert_eq!(p.status(), Some(0x0002));
            }
        }
        // A cursor opened without the definitions: the EOF says so.
        let mut p = ResponseParser::new(ResponseKind::Execute { cursor: true }, false)
            .with_cache_metadata(true);
        assert_eq!(p.feed(&[1, 0]), Ok(Step::More));
        assert_eq!(p.feed(&eof(0x0042, false)), Ok(Step::Done));
        // Without the flag byte, or with one the protocol does not know.
        for bad in [&[2u8][..], &[2, 2], &[2, 1, 0]] {
            let mut p = ResponseParser::new(ResponseKind::Query, true).with_cache_metadata(true);
            assert!(p.feed(bad).is_err(), "{bad:?}");
        }
        // The flag where caching was not agreed on is garbage.
        let mut p = ResponseParser::new(ResponseKind::Query, true);
        assert!(p.feed(&[2, 1]).is_err());
    }

    /// MariaDB runs a prepared LOAD DATA LOCAL too: its execution asks for
    /// the file as a query does.
    #[test]
    fn a_prepared_load_data_local_asks_for_the_file() {
        let ask = b"\xfb/tmp/t1.TRG".to_vec();
        for kind in [ResponseKind::Query, ResponseKind::Execute { cursor: false }] {
            let mut p = ResponseParser::new(kind, true);
            assert_eq!(p.feed(&ask), Ok(Step::LocalInfile), "{kind:?}");
            assert_eq!(p.feed(&ok(1, 0, 2, 0)), Ok(Step::Done), "{kind:?}");
        }
    }

    /// A progress report as MariaDB sends it while an ALTER TABLE runs:
    /// FF, code FFFF, then 1, stage, max stage, progress (3 bytes) and the
    /// stage's name. With reports agreed, it is part of the response; an
    /// ordinary ERR still ends it.
    #[test]
    fn progress_reports_go_on_an_err_still_ends() {
        let report = b"\xff\xff\xff\x01\x01\x02\x10\x27\x00\x0ccopy to tmp ".to_vec();
        let done = ok(0, 0, 2, 0);
        let mut p = ResponseParser::new(ResponseKind::Query, true).with_progress(true);
        assert_eq!(p.feed(&report), Ok(Step::More));
        assert_eq!(p.feed(&report), Ok(Step::More));
        assert_eq!(p.feed(&done), Ok(Step::Done));
        assert!(!p.saw_error());
        let mut p = ResponseParser::new(ResponseKind::Query, true).with_progress(true);
        assert_eq!(p.feed(&report), Ok(Step::More));
        assert_eq!(p.feed(&err(1062, "23000", "dup")), Ok(Step::Done));
        assert!(p.saw_error());
        // Not agreed on: the same bytes are an ERR, the end.
        let mut p = ResponseParser::new(ResponseKind::Query, true);
        assert_eq!(p.feed(&report), Ok(Step::Done));
    }

    fn coldef() -> Vec<u8> {
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00".to_vec()
    }

    #[test]
    fn text_result_classic_eof() {
        let pk = vec![
            vec![1],
            coldef(),
            eof(0x0002, false),
            b"\x011".to_vec(),
            b"\x012".to_vec(),
            eof(0x0003, false),
        ];
        let (steps, p) = run(ResponseKind::Query, false, &pk);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..5].iter().all(|s| *s == Step::More));
        assert_eq!(p.status(), Some(0x0003));
    }

    #[test]
    fn multi_results_deprecate_eof() {
        let pk = vec![
            vec![1],
            coldef(),
            b"\x011".to_vec(),
            eof(status::MORE_RESULTS_EXISTS | 2, true),
            ok(1, 0, status::MORE_RESULTS_EXISTS | 2, 0),
            vec![1],
            coldef(),
            eof(2, true),
        ];
        let (steps, _) = run(ResponseKind::Query, true, &pk);
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
        assert_eq!(steps.last(), Some(&Step::Done));
    }

    #[test]
    fn error_mid_rows_ends() {
        let pk = vec![
            vec![1],
            coldef(),
            eof(2, false),
            b"\x011".to_vec(),
            err(1317, "70100", "interrupted"),
        ];
        let (steps, p) = run(ResponseKind::Query, false, &pk);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(p.saw_error());
    }

    #[test]
    fn execute_with_cursor_stops_after_metadata() {
        let pk = vec![vec![1], coldef(), eof(status::CURSOR_EXISTS | 2, false)];
        let (steps, _) = run(ResponseKind::Execute { cursor: true }, false, &pk);
        assert_eq!(steps.last(), Some(&Step::Done));
    }

    #[test]
    fn cursor_flag_without_a_cursor_request_still_has_rows() {
        // A stored program holding a cursor open sets CURSOR_EXISTS on the
        // results it sends; the rows still follow.
        let pk = vec![
            vec![1],
            coldef(),
            eof(status::CURSOR_EXISTS | 2, false),
            b"\x00\x00\x01".to_vec(),
            eof(status::CURSOR_EXISTS | 2, false),
        ];
        let (steps, _) = run(ResponseKind::Execute { cursor: false }, false, &pk);
        assert_eq!(
            steps,
            vec![Step::More, Step::More, Step::More, Step::More, Step::Done]
        );
    }

    #[test]
    fn prepare_with_params_and_columns() {
        let mut head = vec![0u8];
        head.extend_from_slice(&7u32.to_le_bytes());
        head.extend_from_slice(&1u16.to_le_bytes()); // columns
        head.extend_from_slice(&2u16.to_le_bytes()); // params
        head.extend_from_slice(&[0, 0, 0]);
        let classic = vec![
            head.clone(),
            coldef(),
            coldef(),
            eof(2, false),
            coldef(),
            eof(2, false),
        ];
        let (steps, p) = run(ResponseKind::Prepare, false, &classic);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
        assert_eq!(p.prepare_ok().map(|x| x.statement_id), Some(7));
        let modern = vec![head, coldef(), coldef(), coldef()];
        let (steps, _) = run(ResponseKind::Prepare, true, &modern);
        assert_eq!(steps, vec![Step::More, Step::More, Step::More, Step::Done]);
    }

    #[test]
    fn local_infile_then_ok() {
        let mut p = ResponseParser::new(ResponseKind::Query, false);
        assert_eq!(p.feed(b"\xfb/tmp/x").unwrap(), Step::LocalInfile);
        assert_eq!(p.feed(&ok(3, 0, 2, 0)).unwrap(), Step::Done);
    }

    #[test]
    fn big_row_spanning_frames_is_not_a_terminator() {
        let mut p = ResponseParser::new(ResponseKind::Query, true);
        p.feed(&[1]).unwrap();
        p.feed(&coldef()).unwrap();
        let mut full = vec![0u8; MAX_FRAME];
        full[0] = 0xfe; // a row whose first column is longer than 16 MiB
        assert_eq!(p.feed(&full).unwrap(), Step::More);
        assert_eq!(
            p.feed(&[0xfe, 0, 0, 2, 0, 0, 0]).unwrap(),
            Step::More,
            "continuation, not EOF"
        );
        assert_eq!(p.feed(&eof(2, true)).unwrap(), Step::Done);
    }

    #[test]
    fn rows_are_plain_terminators_errors_and_metadata_are_not() {
        let mut p = ResponseParser::new(ResponseKind::Query, true);
        assert!(!p.expects_row(), "a column count");
        p.feed(&[1]).unwrap();
        assert!(!p.expects_row(), "a column definition");
        p.feed(b"\x03def").unwrap();
        assert!(p.expects_row());
        let plain = ResponseParser::plain_row;
        assert!(plain(0x01, 2), "a text row");
        assert!(plain(0xfb, 1), "a row whose first column is NULL");
        assert!(!plain(0xfe, 7), "the OK that ends it");
        assert!(!plain(0xff, 9), "an ERR");
        assert!(!plain(0x01, MAX_FRAME), "a row over 16 MiB");
        p.feed(&[0xfe, 0, 0, 2, 0]).unwrap();
        assert!(!p.expects_row(), "after the end");
    }

    #[test]
    fn frame_after_end_is_an_error() {
        let mut p = ResponseParser::new(ResponseKind::Single, false);
        assert_eq!(p.feed(&ok(0, 0, 2, 0)).unwrap(), Step::Done);
        assert!(p.feed(&ok(0, 0, 2, 0)).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(
            kind in prop_oneof![Just(ResponseKind::Query), Just(ResponseKind::Execute { cursor: true }), Just(ResponseKind::Execute { cursor: false }), Just(ResponseKind::Fetch),
                                Just(ResponseKind::FieldList), Just(ResponseKind::Prepare), Just(ResponseKind::Single)],
            deprecate in any::<bool>(),
            cache_metadata in any::<bool>(),
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..30),
        ) {
            let mut p = ResponseParser::new(kind, deprecate).with_cache_metadata(cache_metadata);
            for f in &frames {
                if p.feed(f).is_err() { break; }
            }
        }

        /// The relay skips feeding frames `is_plain_row` calls plain:
        /// feeding one must say More and leave the parser as it was. Rows
        /// come after a text result's metadata, or at once for a fetch.
        #[test]
        fn a_plain_row_is_one_feeding_would_not_change(
            fetch in any::<bool>(),
            deprecate in any::<bool>(),
            frames in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..24),
                    Just(vec![0xfe, 0, 0, 2, 0]),
                    Just(vec![0xfe, 0, 0, 2, 0, 0, 0]),
                    Just(vec![0xff, 0x15, 0x04]),
                ],
                0..30,
            ),
        ) {
            let (kind, prefix) = if fetch {
                (ResponseKind::Fetch, vec![])
            } else {
                let mut prefix = vec![vec![1], b"\x03def".to_vec()];
                if !deprecate {
                    prefix.push(eof(0x0002, false));
                }
                (ResponseKind::Query, prefix)
            };
            let mut p = ResponseParser::new(kind, deprecate);
            for f in &prefix {
                prop_assert_eq!(p.feed(f), Ok(Step::More));
            }
            prop_assert!(p.expects_row());
            for f in &frames {
                let plain = p.expects_row()
                    && f.first().is_some_and(|&b| ResponseParser::plain_row(b, f.len()));
                let before = p.clone();
                match p.feed(f) {
                    Ok(step) if plain => {
                        prop_assert_eq!(step, Step::More);
                        prop_assert_eq!(&p, &before);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        prop_assert!(!plain);
                        break;
                    }
                }
            }
        }
    }
}
