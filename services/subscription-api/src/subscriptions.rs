//! The subscription service every dialect shares: validation, name claims, the signing
//! secret, writes, listing and lookup. A dialect (`fynapse`, `synctera`) only maps its
//! request and response shapes onto [`Subscription`] and names its fields through a
//! [`Face`]; every rule about what a subscription may be lives here once.

use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::now_ms;
use hookline_proto::v1::{Dialect, Secret, Subscription};
use hookline_runtime::ApiError;

use crate::AppState;
use crate::catalog::check_event_types;
use crate::claims::{self, Kind};
use crate::input::{
    DESCRIPTION_MAX, METADATA_MAX, PageRequest, check_len, check_name, check_url, created_key,
    paginate,
};
use crate::secrets;
use crate::store::Store;

/// What a dialect calls the fields of the model (used in every refusal), and how it treats
/// names and secrets.
pub struct Face {
    pub dialect: Dialect,
    /// What a 404 calls one of its subscriptions.
    pub what: &'static str,
    pub name: &'static str,
    pub endpoint_url: &'static str,
    pub secret_ref: &'static str,
    pub event_types: &'static str,
    pub description: &'static str,
    pub metadata: &'static str,
    /// `*` allowed among the event types.
    pub all_types: bool,
    /// Names are chosen by the tenant and unique per tenant (claimed); otherwise the name is
    /// the id.
    pub unique_names: bool,
    /// Each subscription has a secret of its own, created and deleted with it; otherwise it
    /// refers to a named secret of the tenant's.
    pub own_secret: bool,
}

/// The signing secret of a subscription being created.
pub enum NewSecret {
    /// A named secret of the tenant's, which must exist.
    Existing(String),
    /// A new named secret (claimed like any secret name), created with the subscription.
    Named(String),
    /// The subscription's own secret (named after its id, so nobody else can pick it).
    Own,
}

/// Checks every field of `sub` against the limits, naming the field as `face` calls it.
/// The caller has synced the event-type view.
pub fn validate(state: &AppState, face: &Face, sub: &Subscription) -> Result<(), ApiError> {
    if face.unique_names {
        check_name(face.name, &sub.name)?;
        check_name(face.secret_ref, &sub.secret_ref)?;
    }
    check_url(face.endpoint_url, &sub.endpoint_url)?;
    check_event_types(state, face.event_types, &sub.event_types, face.all_types)?;
    check_len(
        face.description,
        sub.description.as_deref(),
        DESCRIPTION_MAX,
    )?;
    check_len(face.metadata, sub.metadata.as_deref(), METADATA_MAX)?;
    crate::filters::check(sub.filter.as_deref())
}

/// A new subscription of `tenant` in `face`'s dialect, with a fresh id, enabled, version 1;
/// the dialect then fills in its fields.
pub fn draft(face: &Face, tenant: &str) -> Subscription {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    Subscription {
        name: id.clone(),
        secret_ref: format!("webhook-{id}"),
        id,
        tenant: tenant.to_owned(),
        dialect: face.dialect as i32,
        enabled: true,
        created_at_ms: now,
        updated_at_ms: now,
        version: 1,
        ..Subscription::default()
    }
}

/// Validates and stores the new subscription `sub` (from [`draft`]) with its secret. Returns
/// the secret with its value when one was created. Nothing stays behind when it fails.
pub async fn create(
    state: &AppState,
    who: &Principal,
    face: &Face,
    mut sub: Subscription,
    secret: NewSecret,
) -> Result<(Subscription, Option<(Secret, String)>), ApiError> {
    who.require(Role::Editor)?;
    let store = &state.store;
    if let NewSecret::Existing(name) | NewSecret::Named(name) = &secret {
        sub.secret_ref = name.clone();
    }
    store.event_types.sync().await;
    validate(state, face, &sub)?;
    store.sync().await;
    let held = if face.unique_names {
        if name_taken(store, face, &sub, "") {
            return Err(taken(face, &sub.name));
        }
        if let NewSecret::Existing(name) = &secret {
            secret_exists(store, face, &sub.tenant, name)?;
        }
        Some(
            claims::claim(
                store,
                Kind::Subscription,
                &sub.tenant,
                &sub.name,
                &sub.id,
                face.name,
            )
            .await?,
        )
    } else {
        None
    };
    let abandon = |held: Option<claims::Held>| async move {
        if let Some(h) = held {
            claims::abandon(store, h).await;
        }
    };
    let created = match secret {
        NewSecret::Existing(_) => Ok(None),
        NewSecret::Named(name) => secrets::create_named(store, &sub.tenant, &name, face.secret_ref)
            .await
            .map(Some),
        NewSecret::Own => secrets::write_new(store, &sub.tenant, &sub.secret_ref, face.dialect)
            .await
            .map(Some),
    };
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            abandon(held).await;
            return Err(e);
        }
    };
    sub.updated_at_ms = now_ms();
    if let Err(e) = store.put_subscription(&sub).await {
        if created.is_some() {
            if !face.own_secret {
                let _ = claims::release(store, Kind::Secret, &sub.tenant, &sub.secret_ref).await;
            }
            let _ = store.delete_secret(&sub.tenant, &sub.secret_ref).await;
        }
        abandon(held).await;
        return Err(e);
    }
    tracing::info!(tenant = %sub.tenant, id = %sub.id, dialect = face.what, "subscription created");
    Ok((sub, created))
}

/// The subscriptions of `face`'s dialect that `who` may list (its tenant's; every tenant's
/// for an admin when `all_tenants`), oldest first, one page.
pub fn list(
    state: &AppState,
    who: &Principal,
    face: &Face,
    all_tenants: bool,
    page: &PageRequest,
) -> (Vec<Subscription>, Option<String>) {
    let mut subs: Vec<(String, Subscription)> = state.store.subscriptions.read(|t| {
        t.values()
            .filter(|s| {
                s.dialect() == face.dialect
                    && if all_tenants {
                        who.can_see(&s.tenant)
                    } else {
                        s.tenant == who.tenant
                    }
            })
            .map(|s| (created_key(s.created_at_ms, &s.id), s.clone()))
            .collect()
    });
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    paginate(subs, page)
}

/// Subscription `id` of `face`'s dialect, if `who` may see it; else a 404.
pub fn find(
    store: &Store,
    who: &Principal,
    face: &Face,
    id: &str,
) -> Result<Subscription, ApiError> {
    store.subscription_of(who, id, face.dialect, face.what)
}

/// Applies `change` to subscription `id`, validates and stores the result (re-claiming the
/// name if it changed). `change` may refuse with an error; then nothing changes.
pub async fn update(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
    change: impl FnOnce(&mut Subscription) -> Result<(), ApiError>,
) -> Result<Subscription, ApiError> {
    let store = &state.store;
    let _change = store.change(who).await?;
    let old = find(store, who, face, id)?;
    let mut sub = old.clone();
    change(&mut sub)?;
    store.event_types.sync().await;
    validate(state, face, &sub)?;
    if face.unique_names && sub.secret_ref != old.secret_ref {
        secret_exists(store, face, &sub.tenant, &sub.secret_ref)?;
    }
    if face.unique_names && sub.name != old.name {
        if name_taken(store, face, &sub, id) {
            return Err(taken(face, &sub.name));
        }
        claims::claim(
            store,
            Kind::Subscription,
            &sub.tenant,
            &sub.name,
            id,
            face.name,
        )
        .await?;
        // Released before the rename is written: the old name stays held by the record.
        claims::release(store, Kind::Subscription, &old.tenant, &old.name).await?;
    }
    sub.updated_at_ms = now_ms();
    sub.version += 1;
    store.put_subscription(&sub).await?;
    Ok(sub)
}

/// Deletes subscription `id`: its name claim first, then the record, then its own secret.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
) -> Result<Subscription, ApiError> {
    let store = &state.store;
    let _change = store.change(who).await?;
    let sub = find(store, who, face, id)?;
    if face.unique_names {
        claims::release(store, Kind::Subscription, &sub.tenant, &sub.name).await?;
    }
    store.delete_subscription(id).await?;
    if face.own_secret {
        store.delete_secret(&sub.tenant, &sub.secret_ref).await?;
    }
    tracing::info!(tenant = %sub.tenant, id, dialect = face.what, "subscription deleted");
    Ok(sub)
}

fn name_taken(store: &Store, face: &Face, sub: &Subscription, except_id: &str) -> bool {
    store.subscriptions.read(|t| {
        t.values().any(|s| {
            s.tenant == sub.tenant
                && s.dialect() == face.dialect
                && s.name == sub.name
                && s.id != except_id
        })
    })
}

fn taken(face: &Face, name: &str) -> ApiError {
    ApiError::conflict(
        face.name,
        format!("a {} named {name:?} already exists", face.what),
    )
}

fn secret_exists(store: &Store, face: &Face, tenant: &str, name: &str) -> Result<(), ApiError> {
    match secrets::fynapse_secret(store, tenant, name) {
        Some(_) => Ok(()),
        // Valid by the document, refused by the state: a conflict, as a taken name is.
        None => Err(ApiError::conflict(
            face.secret_ref,
            format!("no secret named {name:?}: create it first"),
        )),
    }
}
