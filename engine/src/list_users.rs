//! ListUsers from the indexes: a page is found by walking one index range and reading only the
//! users that may be on it, never by scanning every user.
//!
//! The indexes (`user/index.rs`) hold each listed user once per column, in the column's sort
//! order with ListUsers' tie-breaks (creation time, then id), and one value's entries in creation
//! order. A query is planned in three ways, cheapest first:
//!
//! 1. **A small candidate set**: `inUserIdsQuery`, `inUserEmailsQuery`, or — unless sorted by
//!    creation, where walking a range in order reads less — an equality or prefix query on an
//!    indexed column (username, login name, names, email; organization, state, type by their
//!    counts) that matches at most [`SMALL`] entries. Those users are read, every query
//!    applied, sorted and paged; `totalResult` is exact.
//! 2. **A walk in the requested order**: the sort column's index (narrowed to the queried value
//!    when the query is on the sort column); for the default sort, by creation, the smallest of
//!    the organization, state and type ranges (in creation order already) and the text queries'
//!    ranges (put in creation order from their keys alone, up to [`SKIP_CAP`] of them). Users
//!    are read as the walk meets them and filtered; the walk stops once the page is full.
//!    `totalResult` comes from the maintained counts when every query is on organization, state
//!    or type, from the walk's length when its own query is the only one and holds exactly (a
//!    case-insensitive equals or starts-with); otherwise the walk goes on counting, up to
//!    [`READ_CAP`] users read.
//! 3. **Too broad**: a page that cannot be filled within [`READ_CAP`] users read (or
//!    [`SKIP_CAP`] index entries skipped) is refused with `LIST-TOO-BROAD`, never answered
//!    by an unbounded scan.
//!
//! A call reads the latest applied state; it is not an isolated snapshot. Every user returned
//! matched the queries when it was read; offsets are positions at the time of the call, so a
//! user created or changed between two calls can shift later pages (as with ZITADEL's
//! offsets). `processedSequence` is the highest sequence among the users read.

use std::collections::HashSet;

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::orgs::OrgRecord;
use crate::types::*;
use crate::user::index::{
    column, corrupt_entry, entry_user, state_byte, state_range, type_byte, LISTED_STATES,
};
use crate::user::lockout::LockoutState;
use crate::user::record::{HumanRecord, Kind, UserRecord};
use crate::users::{login_name, view};
use crate::Engine;
use tails::Tails;

/// A candidate set this small is read whole and sorted in memory.
pub const SMALL: usize = 10_000;
/// At most this many users are read (and filtered) by one call.
pub const READ_CAP: usize = 100_000;
/// At most this many index entries are stepped over to reach an offset without reading users.
pub const SKIP_CAP: usize = 2_000_000;

/// The bounds of one call ([`SMALL`], [`READ_CAP`], [`SKIP_CAP`]; tests use small ones so that
/// a few users exercise every plan and cap).
#[derive(Debug, Clone, Copy)]
struct Limits {
    small: usize,
    read_cap: usize,
    skip_cap: usize,
}

const LIMITS: Limits = Limits {
    small: SMALL,
    read_cap: READ_CAP,
    skip_cap: SKIP_CAP,
};

impl Engine {
    /// ListUsers: the users the caller may read, filtered (all queries must match), sorted and
    /// paged. Deleted users are never listed.
    pub async fn list_users(&self, caller: &Caller, request: ListUsers) -> Result<UserList, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserRead)?;
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        // Index walks and reads on the blocking pool, so the async workers never wait on sled.
        let engine = self.clone();
        let sort_by = request.sort_by;
        let limits = if cfg!(test) { TEST_LIMITS } else { LIMITS };
        let (total_result, processed_sequence, result) = tokio::task::spawn_blocking(move || {
            engine.list_blocking(&reach, &request, limit, limits)
        })
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??;
        // Everything this list observed must be durable before it is shown.
        self.inner.store.settle(None).await?;
        Ok(UserList {
            total_result,
            processed_sequence,
            timestamp: chrono::Utc::now(),
            sort_by,
            result,
        })
    }

    /// (total, highest sequence read, the page).
    fn list_blocking(
        &self,
        reach: &Reach,
        request: &ListUsers,
        limit: usize,
        limits: Limits,
    ) -> Result<(u64, u64, Vec<User>), Error> {
        let mut list = Listing {
            engine: self,
            limits,
            reach,
            queries: conjuncts(&request.queries),
            read: 0,
            highest: 0,
        };
        let offset = usize::try_from(request.offset).unwrap_or(usize::MAX);
        let (total, page) = match list.small_set(request.sort_by)? {
            Some(ids) => list.sorted_set(ids, request, offset, limit)?,
            None => list.walk(request, offset, limit)?,
        };
        let users = page
            .iter()
            .map(|r| {
                let lockout = self.inner.store.get(&keys::lockout(&r.id))?;
                let lockout = LockoutState::decode(lockout.as_deref())?;
                Ok(view(r, &lockout, self.org_blocking(&r.org_id)?.as_deref()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok((total, list.highest, users))
    }
}

/// The queries that must all hold, nested ANDs flattened.
fn conjuncts(queries: &[UserQuery]) -> Vec<&UserQuery> {
    let mut all = Vec::new();
    for query in queries {
        match query {
            UserQuery::And(inner) => all.extend(conjuncts(inner)),
            other => all.push(other),
        }
    }
    all
}

/// An index range: the key prefix of its entries.
struct Range {
    prefix: Vec<u8>,
    /// Every entry of the range matches this query exactly (none of the others): a walk that
    /// has no other query to check can step over entries without reading their users.
    exact: Option<usize>,
    /// Every entry of the range is within the caller's reach.
    in_reach: bool,
}

/// The index range an (equality or prefix) text query on `col` walks: lowercased, so it covers
/// both the case-sensitive and the case-insensitive methods (the query itself is checked on
/// each user read).
fn text_range(col: u8, value: &str, method: TextMatch) -> Option<Range> {
    use TextMatch::*;
    let whole = match method {
        Equals | EqualsIgnoreCase => true,
        StartsWith | StartsWithIgnoreCase => false,
        _ => return None,
    };
    Some(Range {
        prefix: keys::list_index_value(col, value.to_lowercase().as_bytes(), whole),
        exact: None,
        in_reach: false,
    })
}

/// One call's state: what it may see, what it must match, what it has read.
struct Listing<'a> {
    engine: &'a Engine,
    limits: Limits,
    reach: &'a Reach,
    queries: Vec<&'a UserQuery>,
    read: usize,
    highest: u64,
}

impl Listing<'_> {
    fn too_broad() -> Error {
        Error::new(ErrorId::ListTooBroad)
    }

    /// The user `id` if it exists, is listed, in reach and matches every query. Counts toward
    /// [`READ_CAP`].
    fn read(&mut self, id: &str) -> Result<Option<UserRecord>, Error> {
        self.read += 1;
        if self.read > self.limits.read_cap {
            return Err(Self::too_broad());
        }
        let Some(bytes) = self.engine.inner.store.get(&keys::user(id))? else {
            return Ok(None);
        };
        let record = UserRecord::decode(&bytes)?;
        self.highest = self.highest.max(record.sequence);
        if record.state == UserState::Deleted || !self.reach.covers(&record.org_id) {
            return Ok(None);
        }
        let org = self.engine.org_blocking(&record.org_id)?;
        Ok(self
            .queries
            .iter()
            .all(|q| matches(&record, org.as_deref(), q))
            .then_some(record))
    }

    /// The organizations the caller may list: `None` for all.
    fn reach_orgs(&self) -> Option<&[String]> {
        match self.reach {
            Reach::Instance => None,
            Reach::Orgs(orgs) => Some(orgs),
        }
    }

    /// Users of `scope` ("" for all) counted by state and type, filtered.
    fn count(&self, scope: &str, state: Option<UserState>, human: Option<bool>) -> u64 {
        let store = &self.engine.inner.store;
        let mut total = 0;
        for s in LISTED_STATES {
            if state.is_some_and(|want| want != s) {
                continue;
            }
            for h in [true, false] {
                if human.is_some_and(|want| want != h) {
                    continue;
                }
                total += store
                    .counter(&keys::user_count(scope, state_byte(s), h))
                    .max(0);
            }
        }
        total as u64
    }

    /// The exact number of users matching every query, when the counts can tell: every query
    /// is on organization, state or type.
    fn counted_total(&self) -> Option<u64> {
        let (mut org, mut state, mut human) = (None::<&str>, None, None);
        for query in &self.queries {
            match query {
                UserQuery::OrganizationId(o) if org.is_none_or(|seen| seen == o) => org = Some(o),
                UserQuery::State(s) if state.is_none_or(|seen| seen == *s) => state = Some(*s),
                UserQuery::Type(t) => {
                    let h = *t == UserKindFilter::Human;
                    if human.is_some_and(|seen| seen != h) {
                        return Some(0);
                    }
                    human = Some(h)
                }
                UserQuery::OrganizationId(_) | UserQuery::State(_) => return Some(0),
                _ => return None,
            }
        }
        if state == Some(UserState::Deleted) {
            return Some(0);
        }
        let scopes: Vec<&str> = match (org, self.reach_orgs()) {
            (Some(o), reach) if reach.is_none_or(|r| r.iter().any(|x| x == o)) => vec![o],
            (Some(_), _) => return Some(0),
            (None, Some(reach)) => {
                let unique: HashSet<&str> = reach.iter().map(String::as_str).collect();
                unique.into_iter().collect()
            }
            (None, None) => vec![""],
        };
        Some(
            scopes
                .iter()
                .map(|scope| self.count(scope, state, human))
                .sum(),
        )
    }

    /// The ranges of the organization, state and type queries, each with its size.
    fn counted_ranges(&self) -> Vec<(Range, u64)> {
        let mut ranges = Vec::new();
        for (i, query) in self.queries.iter().enumerate() {
            let (prefix, size) = match query {
                UserQuery::OrganizationId(o) => (
                    keys::list_index_value(column::ORG, o.as_bytes(), true),
                    self.count(o, None, None),
                ),
                UserQuery::State(s) if *s != UserState::Deleted => {
                    (state_range(*s), self.count("", Some(*s), None))
                }
                UserQuery::Type(t) => {
                    let human = *t == UserKindFilter::Human;
                    (
                        keys::list_index_value(column::TYPE, &[type_byte(human)], true),
                        self.count("", None, Some(human)),
                    )
                }
                _ => continue,
            };
            let in_reach = match (query, self.reach_orgs()) {
                (_, None) => true,
                (UserQuery::OrganizationId(o), Some(reach)) => reach.iter().any(|r| r == o),
                _ => false,
            };
            ranges.push((
                Range {
                    prefix,
                    exact: Some(i),
                    in_reach,
                },
                size,
            ));
        }
        // A caller who reaches one organization lists it as if it had asked for it.
        if let Some([org]) = self.reach_orgs() {
            ranges.push((
                Range {
                    prefix: keys::list_index_value(column::ORG, org.as_bytes(), true),
                    exact: None,
                    in_reach: true,
                },
                self.count(org, None, None),
            ));
        }
        ranges
    }

    /// The smallest candidate set a query names, if one has at most [`SMALL`] users: ids (in
    /// no particular order, maybe repeated). Sorted by creation, an index range is walked
    /// instead (in that order already, or put in it from its keys), which reads only the page.
    fn small_set(&self, sort_by: SortBy) -> Result<Option<Vec<String>>, Error> {
        let ranges_too = sort_by != SortBy::CreationDate;
        let mut best: Option<Vec<String>> = None;
        let mut consider = |ids: Vec<String>| {
            if best.as_ref().is_none_or(|b| ids.len() < b.len()) {
                best = Some(ids);
            }
        };
        for query in &self.queries {
            match query {
                UserQuery::InUserIds(ids) => consider(ids.clone()),
                UserQuery::InUserEmails(emails) => {
                    let mut ids = Some(Vec::new());
                    for email in emails {
                        let Some(range) = text_range(column::EMAIL, email, TextMatch::Equals)
                        else {
                            continue;
                        };
                        match (self.probe(&range.prefix)?, ids.as_mut()) {
                            (Some(found), Some(ids)) => ids.extend(found),
                            _ => ids = None,
                        }
                    }
                    if let Some(ids) = ids {
                        consider(ids);
                    }
                }
                other if ranges_too => {
                    if let Some(range) = self.text_query_range(other) {
                        if let Some(ids) = self.probe(&range.prefix)? {
                            consider(ids);
                        }
                    }
                }
                _ => {}
            }
        }
        for (range, size) in self.counted_ranges().into_iter().filter(|_| ranges_too) {
            if size as usize <= self.limits.small {
                if let Some(ids) = self.probe(&range.prefix)? {
                    consider(ids);
                }
            }
        }
        Ok(best)
    }

    /// The range a text query walks, if it has one.
    fn text_query_range(&self, query: &UserQuery) -> Option<Range> {
        match query {
            UserQuery::UserName(v, m) => text_range(column::USERNAME, v, *m),
            UserQuery::FirstName(v, m) => text_range(column::FIRST_NAME, v, *m),
            UserQuery::LastName(v, m) => text_range(column::LAST_NAME, v, *m),
            UserQuery::NickName(v, m) => text_range(column::NICK_NAME, v, *m),
            UserQuery::DisplayName(v, m) => text_range(column::DISPLAY_NAME, v, *m),
            UserQuery::Email(v, m) => text_range(column::EMAIL, v, *m),
            // A login name starts with the username: the part before the first '@' is a
            // prefix of it (the username may itself hold an '@' and more).
            UserQuery::LoginName(v, m) => {
                let method = match m {
                    TextMatch::Equals | TextMatch::StartsWith => TextMatch::StartsWith,
                    TextMatch::EqualsIgnoreCase | TextMatch::StartsWithIgnoreCase => {
                        TextMatch::StartsWithIgnoreCase
                    }
                    _ => return None,
                };
                let head = v.split('@').next().unwrap_or("");
                text_range(column::USERNAME, head, method)
            }
            _ => None,
        }
    }

    /// The ids under `prefix`, if there are at most [`SMALL`].
    fn probe(&self, prefix: &[u8]) -> Result<Option<Vec<String>>, Error> {
        let mut ids = Vec::new();
        for entry in self.engine.inner.store.scan_prefix(prefix) {
            let (key, _) = entry?;
            if ids.len() == self.limits.small {
                return Ok(None);
            }
            ids.push(entry_user(&key)?.to_owned());
        }
        Ok(Some(ids))
    }

    /// Plan 1: read every candidate, sort, page.
    fn sorted_set(
        &mut self,
        mut ids: Vec<String>,
        request: &ListUsers,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<UserRecord>), Error> {
        ids.sort_unstable();
        ids.dedup();
        let mut matching = Vec::new();
        for id in &ids {
            if let Some(record) = self.read(id)? {
                matching.push(record);
            }
        }
        sort(&mut matching, request.sort_by, request.asc);
        let total = matching.len() as u64;
        let page = matching.into_iter().skip(offset).take(limit).collect();
        Ok((total, page))
    }

    /// The walk of plan 2, in the requested sort order.
    fn plan_walk(&self, request: &ListUsers) -> Result<Walk, Error> {
        let whole_column = |col: u8| Range {
            prefix: keys::list_index_value(col, b"", false),
            exact: None,
            in_reach: self.reach_orgs().is_none(),
        };
        let on_column = |col: u8| -> Option<Range> {
            self.queries.iter().find_map(|q| {
                let range = self.text_query_range(q)?;
                (range.prefix.get(1) == Some(&col)).then_some(range)
            })
        };
        let counted_on = |col: u8| -> Option<Range> {
            self.counted_ranges()
                .into_iter()
                .map(|(range, _)| range)
                .find(|range| range.prefix.get(1) == Some(&col))
        };
        if request.sort_by == SortBy::CreationDate {
            return self.plan_creation_walk();
        }
        let column = sort_column(request.sort_by);
        let range = match request.sort_by {
            // One state's (type's) entries are in creation order, as the ties of this sort.
            SortBy::State | SortBy::Type => counted_on(column),
            _ => on_column(column),
        };
        Ok(Walk::Range(range.unwrap_or_else(|| whole_column(column))))
    }

    /// The default sort, by creation: the smallest of the organization, state and type ranges
    /// (already in creation order), or of the text queries' ranges put in creation order from
    /// their keys alone (an entry's key ends with the creation time and id), or every user.
    fn plan_creation_walk(&self) -> Result<Walk, Error> {
        let mut best = self
            .counted_ranges()
            .into_iter()
            .min_by_key(|(_, size)| *size)
            .map(|(range, size)| (size as usize, Walk::Range(range)));
        for (i, query) in self.queries.iter().enumerate() {
            let Some(range) = self.text_query_range(query) else {
                continue;
            };
            let most = best.as_ref().map_or(self.limits.skip_cap, |(size, _)| {
                (*size).min(self.limits.skip_cap)
            });
            let Some(mut tails) = self.tails(&range.prefix, most)? else {
                continue; // no smaller than the best so far
            };
            tails.sort();
            let exact = text_query_is_exact(query).then_some(i);
            let size = tails.len();
            best = Some((
                size,
                Walk::Sorted {
                    tails,
                    exact,
                    in_reach: self.reach_orgs().is_none(),
                },
            ));
        }
        Ok(best.map(|(_, walk)| walk).unwrap_or_else(|| {
            Walk::Range(Range {
                prefix: keys::list_index_value(column::CREATED, b"", true),
                exact: None,
                in_reach: self.reach_orgs().is_none(),
            })
        }))
    }

    /// The creation time and id (the key after the value) of every entry under `prefix`, if
    /// there are fewer than `most` (the caller keeps `most` within [`SKIP_CAP`]).
    fn tails(&self, prefix: &[u8], most: usize) -> Result<Option<Tails>, Error> {
        let mut tails = Tails::default();
        for entry in self.engine.inner.store.scan_prefix(prefix) {
            let (key, _) = entry?;
            if tails.len() + 1 >= most {
                return Ok(None);
            }
            let at = keys::list_index_tail(&key).ok_or_else(|| corrupt_entry(&key))?;
            if !tails.push(&key[at..]) {
                return Ok(None);
            }
        }
        Ok(Some(tails))
    }

    /// Plan 2: walk in order, read and filter, page; then the total.
    fn walk(
        &mut self,
        request: &ListUsers,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<UserRecord>), Error> {
        let store = self.engine.inner.store.clone();
        let (mut candidates, exact, in_reach): (
            Box<dyn Iterator<Item = Result<String, Error>>>,
            _,
            _,
        ) = match self.plan_walk(request)? {
            Walk::Range(range) => {
                let entries = if request.asc {
                    store.scan_prefix(&range.prefix)
                } else {
                    store.scan_prefix_rev(&range.prefix)
                };
                let ids = entries.map(|entry| {
                    let (key, _) = entry?;
                    Ok(entry_user(&key)?.to_owned())
                });
                (Box::new(ids), range.exact, range.in_reach)
            }
            Walk::Sorted {
                tails,
                exact,
                in_reach,
            } => (Box::new(tails.ids(request.asc).map(Ok)), exact, in_reach),
        };
        // With nothing left to check but the walk's own query, the offset is stepped over
        // without reading users, and the walk's length is the total.
        let blind = in_reach && (0..self.queries.len()).all(|i| Some(i) == exact);
        let mut skipped = 0;
        let mut matched = 0usize;
        let mut page = Vec::new();
        let mut seen = HashSet::new();
        let counted = self.counted_total();
        for id in candidates.by_ref() {
            let id = id?;
            if blind && matched < offset {
                matched += 1;
                skipped += 1;
                if skipped > self.limits.skip_cap {
                    return Err(Self::too_broad());
                }
                continue;
            }
            if !seen.insert(id.clone()) {
                continue; // met twice: it moved within the range during the walk
            }
            if let Some(record) = self.read(&id)? {
                matched += 1;
                if matched > offset {
                    page.push(record);
                    if page.len() == limit {
                        break;
                    }
                }
            }
        }
        let total = match counted {
            Some(total) => total,
            None if page.len() < limit => matched as u64,
            None if blind => {
                // The rest of the walk is all matches: counted on the index alone.
                let mut total = matched;
                for id in candidates {
                    id?;
                    total += 1;
                    skipped += 1;
                    if skipped > self.limits.skip_cap {
                        break;
                    }
                }
                total as u64
            }
            None => {
                // Counting the rest: only as far as the cap; beyond it the total says "at
                // least this many".
                let mut total = matched;
                for id in candidates {
                    if self.read >= self.limits.read_cap {
                        break;
                    }
                    let id = id?;
                    if seen.insert(id.clone()) && self.read(&id)?.is_some() {
                        total += 1;
                    }
                }
                total as u64
            }
        };
        Ok((total, page))
    }
}

/// The index column of a sort.
fn sort_column(sort_by: SortBy) -> u8 {
    match sort_by {
        SortBy::CreationDate => column::CREATED,
        SortBy::UserName => column::USERNAME,
        SortBy::FirstName => column::FIRST_NAME,
        SortBy::LastName => column::LAST_NAME,
        SortBy::NickName => column::NICK_NAME,
        SortBy::DisplayName => column::DISPLAY_NAME,
        SortBy::Email => column::EMAIL,
        SortBy::State => column::STATE,
        SortBy::Type => column::TYPE,
    }
}

/// What plan 2 walks.
enum Walk {
    /// An index range, in key order (or reversed).
    Range(Range),
    /// A text query's range in creation order.
    Sorted {
        tails: Tails,
        /// The query whose range they are, if it holds exactly for all of them.
        exact: Option<usize>,
        in_reach: bool,
    },
}

/// A text query whose range holds exactly its matches: a case-insensitive equals or
/// starts-with on an indexed column (the index holds lowercased values). The case-sensitive
/// methods and login names are checked on each user read.
fn text_query_is_exact(query: &UserQuery) -> bool {
    use TextMatch::{EqualsIgnoreCase, StartsWithIgnoreCase};
    match query {
        UserQuery::UserName(_, m)
        | UserQuery::FirstName(_, m)
        | UserQuery::LastName(_, m)
        | UserQuery::NickName(_, m)
        | UserQuery::DisplayName(_, m)
        | UserQuery::Email(_, m) => matches!(m, EqualsIgnoreCase | StartsWithIgnoreCase),
        _ => false,
    }
}

/// Sorts `records` as ListUsers does: by the sort column (text lowercased), then creation time,
/// then id; descending unless `asc`.
pub(crate) fn sort(records: &mut [UserRecord], by: SortBy, asc: bool) {
    records.sort_by(|a, b| {
        let ord = sort_key(a, by)
            .cmp(&sort_key(b, by))
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.id.cmp(&b.id));
        if asc {
            ord
        } else {
            ord.reverse()
        }
    });
}

fn text_matches(value: &str, pattern: &str, method: TextMatch) -> bool {
    use TextMatch::*;
    let (v, p) = match method {
        EqualsIgnoreCase | StartsWithIgnoreCase | ContainsIgnoreCase | EndsWithIgnoreCase => {
            (value.to_lowercase(), pattern.to_lowercase())
        }
        _ => (value.to_owned(), pattern.to_owned()),
    };
    match method {
        Equals | EqualsIgnoreCase => v == p,
        StartsWith | StartsWithIgnoreCase => v.starts_with(&p),
        Contains | ContainsIgnoreCase => v.contains(&p),
        EndsWith | EndsWithIgnoreCase => v.ends_with(&p),
    }
}

/// Whether `record` (of organization `org`) matches `query`.
pub(crate) fn matches(record: &UserRecord, org: Option<&OrgRecord>, query: &UserQuery) -> bool {
    let human = match &*record.kind {
        Kind::Human(h) => Some(h),
        Kind::Machine(_) => None,
    };
    let human_text = |f: fn(&HumanRecord) -> Option<&str>, pattern: &str, method: TextMatch| {
        human
            .and_then(f)
            .is_some_and(|value| text_matches(value, pattern, method))
    };
    match query {
        UserQuery::UserName(name, method) => text_matches(&record.username, name, *method),
        UserQuery::FirstName(v, m) => human_text(|h| Some(&h.profile.given_name), v, *m),
        UserQuery::LastName(v, m) => human_text(|h| Some(&h.profile.family_name), v, *m),
        UserQuery::NickName(v, m) => human_text(|h| h.profile.nick_name.as_deref(), v, *m),
        UserQuery::DisplayName(v, m) => human_text(|h| h.profile.display_name.as_deref(), v, *m),
        UserQuery::Email(v, m) => human_text(|h| Some(&h.email.email), v, *m),
        UserQuery::Phone(v) => human_text(
            |h| h.phone.as_ref().map(|p| p.phone.as_str()),
            v,
            TextMatch::Equals,
        ),
        UserQuery::LoginName(v, m) => {
            let login = org.map_or_else(
                || record.username.clone(),
                |o| login_name(&record.username, o),
            );
            text_matches(&login, v, *m)
        }
        UserQuery::State(state) => record.state == *state,
        UserQuery::Type(kind) => matches!(
            (&*record.kind, kind),
            (Kind::Human(_), UserKindFilter::Human) | (Kind::Machine(_), UserKindFilter::Machine)
        ),
        UserQuery::OrganizationId(org) => &record.org_id == org,
        UserQuery::InUserIds(ids) => ids.iter().any(|id| id == &record.id),
        UserQuery::InUserEmails(emails) => human.is_some_and(|h| {
            emails
                .iter()
                .any(|e| e.eq_ignore_ascii_case(&h.email.email))
        }),
        UserQuery::Or(queries) => queries.iter().any(|q| matches(record, org, q)),
        UserQuery::And(queries) => queries.iter().all(|q| matches(record, org, q)),
        UserQuery::Not(query) => !matches(record, org, query),
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortValue<'a> {
    Text(std::borrow::Cow<'a, str>),
    Number(i64),
}

fn sort_key(record: &UserRecord, by: SortBy) -> SortValue<'_> {
    use std::borrow::Cow;
    let human = match &*record.kind {
        Kind::Human(h) => Some(h),
        Kind::Machine(_) => None,
    };
    let text = |f: fn(&HumanRecord) -> Option<&str>| {
        SortValue::Text(Cow::Owned(human.and_then(f).unwrap_or("").to_lowercase()))
    };
    match by {
        SortBy::CreationDate => SortValue::Number(record.created),
        SortBy::UserName => SortValue::Text(Cow::Owned(record.username.to_lowercase())),
        SortBy::FirstName => text(|h| Some(&h.profile.given_name)),
        SortBy::LastName => text(|h| Some(&h.profile.family_name)),
        SortBy::NickName => text(|h| h.profile.nick_name.as_deref()),
        SortBy::DisplayName => text(|h| h.profile.display_name.as_deref()),
        SortBy::Email => text(|h| Some(&h.email.email)),
        SortBy::State => SortValue::Number(i64::from(state_byte(record.state))),
        SortBy::Type => SortValue::Number(if human.is_some() { 0 } else { 1 }),
    }
}

/// Small enough for a unit test's few hundred users to reach every plan and cap.
const TEST_LIMITS: Limits = Limits {
    small: 8,
    read_cap: 150,
    skip_cap: 150,
};

mod tails;
#[cfg(test)]
mod tests;
