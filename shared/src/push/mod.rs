//! Push notifications to the customer's device (docs/push.md): the FCM HTTP v1 client
//! ([`fcm`]) and the service-account assertion it gets its OAuth tokens with ([`jwt`]). What
//! is owed and when lives in the outbox (`crate::db::push`); the worker sends it
//! (`worker::push`).

pub mod fcm;
pub mod jwt;
