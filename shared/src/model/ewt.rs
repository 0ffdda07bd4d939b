//! Estimated wait time (docs/decisions.md#estimated-wait-time; the endpoints in
//! docs/ges-behavior.md#queue-status and #estimated-wait-time), computed natively from a
//! service's queue view (`shared::redis::queue::Snapshot`): pending count × mean interval
//! between the last [`crate::redis::queue::HISTORY`] dequeues.
//!
//! - `mode1`: that product; `-1` while fewer than two dequeues are known.
//! - `mode2` (default): as `mode1`, but `-1` when callbacks wait and no agent took one within
//!   the activity window (`EWT_AGENT_ACTIVITY_WINDOW_S`) — nobody is serving the queue. An
//!   empty queue whose agents are idle is not "no activity": its estimate is 0.
//! - `mode3`: the tenant's GWS statistic named by the service's `ewt_statistic`
//!   (`functions::statistics::ewt`, docs/statistics.md#ewt-mode3); `-1` when there is no GWS,
//!   no statistic or no value. [`estimate`] itself never answers it.

use serde::Serialize;

use crate::redis::queue::{Snapshot, mean_interval_ms, wait_secs};

/// Estimation mode of `GET /estimated-wait-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Throughput and pending count only.
    Mode1,
    /// Mode1 plus agent activity.
    Mode2,
    /// The tenant's GWS statistic (`functions::statistics::ewt`).
    Mode3,
}

impl Mode {
    /// Parses the `mode` query parameter (absent or empty = `mode2`).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.map(str::trim) {
            None | Some("") => Some(Self::Mode2),
            Some(m) if m.eq_ignore_ascii_case("mode1") => Some(Self::Mode1),
            Some(m) if m.eq_ignore_ascii_case("mode2") => Some(Self::Mode2),
            Some(m) if m.eq_ignore_ascii_case("mode3") => Some(Self::Mode3),
            Some(_) => None,
        }
    }
}

/// Why no estimate could be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Fewer than two dequeues recorded for the queue.
    NoHistory,
    /// Callbacks wait but no agent took one within the window (seconds).
    NoAgentActivity(u64),
    /// Mode3 without a statistics source (no GWS credentials for the tenant).
    NoStatisticsSource,
    /// Mode3 for a service without `ewt_statistic`.
    NoStatistic,
    /// Mode3: GWS failed, or its answer holds no usable value.
    StatisticUnavailable,
}

impl Unknown {
    /// The item's `resultCode` (the published client model's codes): `-2` when no agent is
    /// serving the queue, `-1` when the estimate is unknown for any other reason.
    pub fn result_code(self) -> i32 {
        match self {
            Self::NoAgentActivity(_) => -2,
            Self::NoHistory
            | Self::NoStatisticsSource
            | Self::NoStatistic
            | Self::StatisticUnavailable => -1,
        }
    }

    /// The in-band message of the `-1` answer.
    pub fn message(self) -> String {
        match self {
            Self::NoHistory => "no wait-time history yet for this queue".into(),
            Self::NoAgentActivity(s) => format!("no agent activity in the last {s} s"),
            Self::NoStatisticsSource => {
                "no statistics source configured (no GWS credentials for this tenant)".into()
            }
            Self::NoStatistic => "no ewt_statistic set for this service".into(),
            Self::StatisticUnavailable => {
                "statistics source unavailable or without a value, retry later".into()
            }
        }
    }
}

/// The estimate for a callback joining the queue now, in seconds (mode1 and mode2; mode3 reads
/// GWS above this layer and answers [`Unknown::NoStatisticsSource`] here).
pub fn estimate(snap: &Snapshot, mode: Mode, now_ms: i64, window_s: u64) -> Result<i64, Unknown> {
    if mode == Mode::Mode3 {
        return Err(Unknown::NoStatisticsSource);
    }
    let interval = mean_interval_ms(&snap.history).ok_or(Unknown::NoHistory)?;
    if mode == Mode::Mode2 && snap.pending > 0 {
        let newest = snap.history.first().copied().unwrap_or(i64::MIN);
        let window_ms = i64::try_from(window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        if now_ms.saturating_sub(newest) > window_ms {
            return Err(Unknown::NoAgentActivity(window_s));
        }
    }
    Ok(wait_secs(snap.pending, interval))
}

/// One item of `GET /estimated-wait-time`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimatedWaitTime {
    /// The virtual queue (service) asked about.
    pub virtual_queue: String,
    /// Seconds; `-1` when unknown.
    pub estimated_wait_time: i64,
    /// Why the estimate is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `0` valid estimate, `-1` unknown (no interactions in the queue yet, unknown queue, no
    /// source, data unavailable), `-2` no agent serving the queue ([`Unknown::result_code`]).
    pub result_code: i32,
}

/// `GET /callbacks/queue-status/{queue}` (docs/ges-behavior.md#queue-status).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Seconds; `-1` when unknown.
    pub ewt: i64,
    /// Immediate callbacks enabled and one booked now is forecast to be served before closing.
    pub offer_immediate_callback: bool,
    /// The service is enabled and takes scheduled callbacks.
    pub offer_scheduled_callback: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pending: i64, history: &[i64]) -> Snapshot {
        Snapshot {
            pending,
            history: history.to_vec(),
        }
    }

    #[test]
    fn result_codes_follow_the_client_model() {
        assert_eq!(Unknown::NoHistory.result_code(), -1);
        assert_eq!(Unknown::NoAgentActivity(600).result_code(), -2);
        assert_eq!(Unknown::NoStatisticsSource.result_code(), -1);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(None), Some(Mode::Mode2));
        assert_eq!(Mode::parse(Some("")), Some(Mode::Mode2));
        assert_eq!(Mode::parse(Some("MODE1")), Some(Mode::Mode1));
        assert_eq!(Mode::parse(Some("mode3")), Some(Mode::Mode3));
        assert_eq!(Mode::parse(Some("mode4")), None);
    }

    #[test]
    fn pending_times_mean_interval() {
        // 4 dequeues 250 ms apart, 20 waiting: 5 s.
        let s = snap(20, &[10_750, 10_500, 10_250, 10_000]);
        assert_eq!(estimate(&s, Mode::Mode1, 11_000, 600), Ok(5));
        assert_eq!(estimate(&s, Mode::Mode2, 11_000, 600), Ok(5));
        assert_eq!(
            estimate(&snap(3, &[10_000]), Mode::Mode1, 11_000, 600),
            Err(Unknown::NoHistory)
        );
        assert_eq!(
            estimate(&s, Mode::Mode3, 11_000, 600),
            Err(Unknown::NoStatisticsSource)
        );
    }

    #[test]
    fn mode2_needs_recent_agent_activity_only_when_callbacks_wait() {
        let s = snap(2, &[10_750, 10_500]);
        let late = 10_750 + 601_000;
        assert_eq!(estimate(&s, Mode::Mode1, late, 600), Ok(1));
        assert_eq!(
            estimate(&s, Mode::Mode2, late, 600),
            Err(Unknown::NoAgentActivity(600))
        );
        // Empty queue, idle agents: nothing to wait for.
        assert_eq!(
            estimate(&snap(0, &[10_750, 10_500]), Mode::Mode2, late, 600),
            Ok(0)
        );
    }
}
