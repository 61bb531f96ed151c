//! PTP hardware clock plugin for ntpd-host (work in progress).
