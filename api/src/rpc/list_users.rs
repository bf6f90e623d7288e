//! ListUsers (`POST /v2/users`): paging, sorting and the v2 search queries (combined with AND;
//! `orQuery`, `andQuery` and `notQuery` nest). A query type Latchkey does not know is refused,
//! never ignored — ignoring a filter would return users the caller did not ask for.

use serde::{Deserialize, Serialize};

use latchkey_engine::{
    self as engine, Caller, Engine, Error, ListUsers as ListRequest, SortBy, TextMatch,
    UserKindFilter, UserQuery,
};

use super::get_user::UserJson;
use super::Rpc;
use crate::wire::{
    timestamp, u64_string, TextQueryMethodJson, TypeJson, UserFieldNameJson, UserStateJson,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQueryJson {
    #[serde(default, with = "u64_string")]
    pub offset: u64,
    #[serde(default)]
    pub limit: u32,
    #[serde(default)]
    pub asc: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUsersRequest {
    pub query: Option<ListQueryJson>,
    #[serde(default, alias = "sorting_column")]
    pub sorting_column: UserFieldNameJson,
    #[serde(default)]
    pub queries: Vec<SearchQueryJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextQueryJson {
    #[serde(
        default,
        alias = "user_name",
        alias = "userName",
        alias = "first_name",
        alias = "firstName",
        alias = "last_name",
        alias = "lastName",
        alias = "nick_name",
        alias = "nickName",
        alias = "display_name",
        alias = "displayName",
        alias = "email_address",
        alias = "emailAddress",
        alias = "login_name",
        alias = "loginName",
        alias = "number"
    )]
    pub value: String,
    #[serde(default)]
    pub method: TextQueryMethodJson,
}

#[derive(Debug, Default, Deserialize)]
pub struct StateQueryJson {
    #[serde(default)]
    pub state: UserStateJson,
}

#[derive(Debug, Default, Deserialize)]
pub struct TypeQueryJson {
    #[serde(default, rename = "type")]
    pub kind: TypeJson,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InUserIdsJson {
    #[serde(default, alias = "user_ids")]
    pub user_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InUserEmailsJson {
    #[serde(default, alias = "user_emails")]
    pub user_emails: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationIdQueryJson {
    #[serde(default, alias = "organization_id")]
    pub organization_id: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct QueriesJson {
    #[serde(default)]
    pub queries: Vec<SearchQueryJson>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NotQueryJson {
    pub query: Option<Box<SearchQueryJson>>,
}

/// `zitadel.user.v2.SearchQuery`: exactly one field set.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchQueryJson {
    #[serde(alias = "user_name_query")]
    user_name_query: Option<TextQueryJson>,
    #[serde(alias = "first_name_query")]
    first_name_query: Option<TextQueryJson>,
    #[serde(alias = "last_name_query")]
    last_name_query: Option<TextQueryJson>,
    #[serde(alias = "nick_name_query")]
    nick_name_query: Option<TextQueryJson>,
    #[serde(alias = "display_name_query")]
    display_name_query: Option<TextQueryJson>,
    #[serde(alias = "email_query")]
    email_query: Option<TextQueryJson>,
    #[serde(alias = "phone_query")]
    phone_query: Option<TextQueryJson>,
    #[serde(alias = "login_name_query")]
    login_name_query: Option<TextQueryJson>,
    #[serde(alias = "state_query")]
    state_query: Option<StateQueryJson>,
    #[serde(alias = "type_query")]
    type_query: Option<TypeQueryJson>,
    #[serde(alias = "in_user_ids_query")]
    in_user_ids_query: Option<InUserIdsJson>,
    #[serde(alias = "in_user_emails_query")]
    in_user_emails_query: Option<InUserEmailsJson>,
    #[serde(alias = "organization_id_query")]
    organization_id_query: Option<OrganizationIdQueryJson>,
    #[serde(alias = "or_query")]
    or_query: Option<QueriesJson>,
    #[serde(alias = "and_query")]
    and_query: Option<QueriesJson>,
    #[serde(alias = "not_query")]
    not_query: Option<NotQueryJson>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

fn text(q: TextQueryJson) -> (String, TextMatch) {
    let method = match q.method {
        TextQueryMethodJson::Equals => TextMatch::Equals,
        TextQueryMethodJson::EqualsIgnoreCase => TextMatch::EqualsIgnoreCase,
        TextQueryMethodJson::StartsWith => TextMatch::StartsWith,
        TextQueryMethodJson::StartsWithIgnoreCase => TextMatch::StartsWithIgnoreCase,
        TextQueryMethodJson::Contains => TextMatch::Contains,
        TextQueryMethodJson::ContainsIgnoreCase => TextMatch::ContainsIgnoreCase,
        TextQueryMethodJson::EndsWith => TextMatch::EndsWith,
        TextQueryMethodJson::EndsWithIgnoreCase => TextMatch::EndsWithIgnoreCase,
    };
    (q.value, method)
}

fn convert_all(queries: Vec<SearchQueryJson>) -> Result<Vec<UserQuery>, Error> {
    queries.into_iter().map(SearchQueryJson::convert).collect()
}

impl SearchQueryJson {
    fn convert(self) -> Result<UserQuery, Error> {
        if let Some(name) = self.other.keys().next() {
            return Err(Error::invalid(format!("unknown search query {name:?}")));
        }
        let mut found: Vec<UserQuery> = Vec::with_capacity(1);
        let mut push_text = |q: Option<TextQueryJson>, make: fn(String, TextMatch) -> UserQuery| {
            if let Some(q) = q {
                let (value, method) = text(q);
                found.push(make(value, method));
            }
        };
        push_text(self.user_name_query, UserQuery::UserName);
        push_text(self.first_name_query, UserQuery::FirstName);
        push_text(self.last_name_query, UserQuery::LastName);
        push_text(self.nick_name_query, UserQuery::NickName);
        push_text(self.display_name_query, UserQuery::DisplayName);
        push_text(self.email_query, UserQuery::Email);
        push_text(self.login_name_query, UserQuery::LoginName);
        if let Some(q) = self.phone_query {
            found.push(UserQuery::Phone(q.value));
        }
        if let Some(q) = self.state_query {
            let state = match q.state {
                UserStateJson::Active => engine::UserState::Active,
                UserStateJson::Inactive => engine::UserState::Inactive,
                UserStateJson::Deleted => engine::UserState::Deleted,
                UserStateJson::Locked => engine::UserState::Locked,
                UserStateJson::Initial => engine::UserState::Initial,
                UserStateJson::Unspecified => {
                    return Err(Error::invalid("stateQuery.state must be set"))
                }
            };
            found.push(UserQuery::State(state));
        }
        if let Some(q) = self.type_query {
            found.push(UserQuery::Type(match q.kind {
                TypeJson::Human => UserKindFilter::Human,
                TypeJson::Machine => UserKindFilter::Machine,
                TypeJson::Unspecified => return Err(Error::invalid("typeQuery.type must be set")),
            }));
        }
        if let Some(q) = self.in_user_ids_query {
            found.push(UserQuery::InUserIds(q.user_ids));
        }
        if let Some(q) = self.in_user_emails_query {
            found.push(UserQuery::InUserEmails(q.user_emails));
        }
        if let Some(q) = self.organization_id_query {
            found.push(UserQuery::OrganizationId(q.organization_id));
        }
        if let Some(q) = self.or_query {
            found.push(UserQuery::Or(convert_all(q.queries)?));
        }
        if let Some(q) = self.and_query {
            found.push(UserQuery::And(convert_all(q.queries)?));
        }
        if let Some(q) = self.not_query {
            let inner = q
                .query
                .ok_or_else(|| Error::invalid("notQuery.query is required"))?;
            found.push(UserQuery::Not(Box::new(inner.convert()?)));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::invalid("empty search query")),
            _ => Err(Error::invalid("a search query must set exactly one query")),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDetailsJson {
    #[serde(with = "u64_string")]
    pub total_result: u64,
    #[serde(with = "u64_string")]
    pub processed_sequence: u64,
    pub timestamp: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUsersResponse {
    pub details: ListDetailsJson,
    pub sorting_column: UserFieldNameJson,
    pub result: Vec<UserJson>,
}

impl crate::wire::JsonAnswer for ListUsersResponse {}

pub struct ListUsers;

impl Rpc for ListUsers {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "ListUsers";
    type Request = ListUsersRequest;
    type Response = ListUsersResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::ListUsersRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::ListUsersResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: ListUsersRequest,
    ) -> Result<ListUsersResponse, Error> {
        let query = request.query.unwrap_or_default();
        let sort_by = match request.sorting_column {
            UserFieldNameJson::Unspecified | UserFieldNameJson::CreationDate => {
                SortBy::CreationDate
            }
            UserFieldNameJson::UserName => SortBy::UserName,
            UserFieldNameJson::FirstName => SortBy::FirstName,
            UserFieldNameJson::LastName => SortBy::LastName,
            UserFieldNameJson::NickName => SortBy::NickName,
            UserFieldNameJson::DisplayName => SortBy::DisplayName,
            UserFieldNameJson::Email => SortBy::Email,
            UserFieldNameJson::State => SortBy::State,
            UserFieldNameJson::Type => SortBy::Type,
        };
        let list = engine
            .list_users(
                caller,
                ListRequest {
                    offset: query.offset,
                    limit: query.limit,
                    asc: query.asc,
                    sort_by,
                    queries: convert_all(request.queries)?,
                },
            )
            .await?;
        Ok(ListUsersResponse {
            details: ListDetailsJson {
                total_result: list.total_result,
                processed_sequence: list.processed_sequence,
                timestamp: timestamp(&list.timestamp),
            },
            sorting_column: request.sorting_column,
            result: list.result.into_iter().map(Into::into).collect(),
        })
    }
}
