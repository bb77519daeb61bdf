//! The (class, method) pairs of AMQP 0-9-1, to tell an unknown method (540)
//! from a known one with malformed arguments (502).

/// True for every method id the 0-9-1 specification defines.
pub fn is_known(class: u16, method: u16) -> bool {
    match class {
        10 => matches!(
            method,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method, 10 | 11),
        40 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method, 10 | 11),
        90 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// A method's (class id, method id), for the ids a `close` reply names.
pub type MethodId = (u16, u16);

/// `connection` class id.
pub const CONNECTION_CLASS: u16 = 10;
/// `channel.open`.
pub const CHANNEL_OPEN: MethodId = (20, 10);
/// `basic.publish` (what a stray content frame belongs to).
pub const BASIC_PUBLISH: MethodId = (60, 40);
/// `connection.start-ok`.
pub const CONNECTION_START_OK: MethodId = (CONNECTION_CLASS, 11);
/// `connection.tune-ok`.
pub const CONNECTION_TUNE_OK: MethodId = (CONNECTION_CLASS, 31);
/// `connection.open`.
pub const CONNECTION_OPEN: MethodId = (CONNECTION_CLASS, 40);
/// `tx.commit`.
pub const TX_COMMIT: MethodId = (90, 20);
