//! The gevent-style hub (work in progress).
