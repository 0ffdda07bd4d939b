//! `GET /ges/queues`: per service, open callbacks by state, the current estimate, the next
//! due callback and the slot fill of the next 24 hours (booked vs capacity per slot, drawn as
//! an inline SVG bar chart). Read-only; every role that sees callbacks sees it.

use axum::{Router, extract::State, response::Response, routing::get};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use shared::{
    db::{self, services::Services, ui::QueueCounts},
    http::AppState,
    model::ewt::Mode,
};

use super::{UiError, page, roles::Permission, session::Session};
use crate::wait;

/// The Queues page route.
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/queues", get(queues))
}

/// One bar of the slot-fill chart.
#[derive(Debug, Serialize)]
struct Bar {
    /// Slot start, `HH:MM` UTC.
    label: String,
    booked: u32,
    total: u32,
    /// Bar geometry in the SVG's units (120 high, 12 wide per slot).
    x: usize,
    cap_y: u32,
    cap_h: u32,
    booked_y: u32,
    booked_h: u32,
}

/// A service's row on the page.
#[derive(Debug, Serialize)]
struct QueueView {
    counts: QueueCounts,
    enabled: bool,
    estimate: String,
    bars: Vec<Bar>,
    chart_width: usize,
}

async fn queues(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    s.require(Permission::ViewCallbacks)?;
    let client = state.db.get().await?;
    let services = db::versioned::list::<Services>(&client, &s.tenant).await?;
    let counts = db::ui::queue_counts(&client, &s.tenant).await?;
    let mut views = Vec::with_capacity(services.len());
    for svc in &services {
        let counts = counts
            .iter()
            .find(|c| c.service == svc.name)
            .cloned()
            .unwrap_or_else(|| QueueCounts {
                service: svc.name.clone(),
                ..Default::default()
            });
        let estimate = match wait::for_service(&state, &s.tenant, &svc.name, Mode::Mode1).await {
            Ok(secs) => format!("{secs} s"),
            Err(_) => "unknown".into(),
        };
        let bars = slot_bars(&client, &s.tenant, &svc.name, &svc.body).await;
        views.push(QueueView {
            counts,
            enabled: svc.body.enabled,
            estimate,
            chart_width: bars.len().max(1) * 12,
            bars,
        });
    }
    page(
        "queues.html",
        Some(&s),
        minijinja::context! { queues => views },
    )
}

/// The bars of the next 24 hours' open slots (none when the service has no plan or it cannot
/// be read: the page still shows the counts).
async fn slot_bars(
    client: &deadpool_postgres::Client,
    tenant: &str,
    service: &str,
    settings: &shared::model::ServiceSettings,
) -> Vec<Bar> {
    if settings.capacity_rule.is_none() {
        return Vec::new();
    }
    let now = Timestamp::now();
    let to = now
        .saturating_add(SignedDuration::from_hours(24))
        .unwrap_or(now);
    let Ok(plan) = db::hours::plan(client, tenant, service, settings).await else {
        return Vec::new();
    };
    let Ok(slots) = db::slots::window(client, tenant, service, &plan, now, to).await else {
        return Vec::new();
    };
    let open: Vec<_> = slots
        .into_iter()
        .filter(|s| s.slot.total > 0)
        .take(96)
        .collect();
    let max = open.iter().map(|s| s.slot.total).max().unwrap_or(1).max(1);
    open.iter()
        .enumerate()
        .map(|(i, s)| {
            let booked = s.slot.total.saturating_sub(s.remaining);
            let cap_h = s.slot.total * 100 / max;
            let booked_h = booked * 100 / max;
            Bar {
                label: s.slot.start.strftime("%H:%M").to_string(),
                booked,
                total: s.slot.total,
                x: i * 12,
                cap_y: 110 - cap_h,
                cap_h,
                booked_y: 110 - booked_h,
                booked_h,
            }
        })
        .collect()
}
