//! Golden report-v1 test (filled in below).
