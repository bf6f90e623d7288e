//! ListUsers (`POST /v2/users`): paging, sorting and the v2 search queries (combined with AND;
//! `orQuery`, `andQuery` and `notQuery` nest). A query Latchkey does not know is refused, never
//! ignored — ignoring a filter would return users the caller did not ask for.

use latchkey_engine::{
    self as engine, Error, ListUsers as ListRequest, SortBy, TextMatch, UserKindFilter, UserQuery,
};

use super::get_user::{push_enum, push_user, user_message};
use super::{Call, Rpc};
use crate::proto::zitadel::object::v2::{self as object, TextQueryMethod};
use crate::proto::zitadel::user::v2::{self as user, search_query::Query};
use crate::wire::{known, JsonObject};

fn text(value: String, method: i32) -> Result<(String, TextMatch), Error> {
    let method = match known::<TextQueryMethod>("method", method)? {
        TextQueryMethod::Equals => TextMatch::Equals,
        TextQueryMethod::EqualsIgnoreCase => TextMatch::EqualsIgnoreCase,
        TextQueryMethod::StartsWith => TextMatch::StartsWith,
        TextQueryMethod::StartsWithIgnoreCase => TextMatch::StartsWithIgnoreCase,
        TextQueryMethod::Contains => TextMatch::Contains,
        TextQueryMethod::ContainsIgnoreCase => TextMatch::ContainsIgnoreCase,
        TextQueryMethod::EndsWith => TextMatch::EndsWith,
        TextQueryMethod::EndsWithIgnoreCase => TextMatch::EndsWithIgnoreCase,
    };
    Ok((value, method))
}

fn convert_all(queries: Vec<user::SearchQuery>) -> Result<Vec<UserQuery>, Error> {
    queries.into_iter().map(convert).collect()
}

/// One `SearchQuery`: exactly one query set. (A query of a kind this build does not know is an
/// unknown JSON field, ignored while parsing, so it arrives as none set: refused here.)
fn convert(query: user::SearchQuery) -> Result<UserQuery, Error> {
    let query = query.query.ok_or_else(|| {
        Error::invalid(
            "a search query must set exactly one known query (an unknown query is refused)",
        )
    })?;
    Ok(match query {
        Query::UserNameQuery(q) => {
            let (value, method) = text(q.user_name, q.method)?;
            UserQuery::UserName(value, method)
        }
        Query::FirstNameQuery(q) => {
            let (value, method) = text(q.first_name, q.method)?;
            UserQuery::FirstName(value, method)
        }
        Query::LastNameQuery(q) => {
            let (value, method) = text(q.last_name, q.method)?;
            UserQuery::LastName(value, method)
        }
        Query::NickNameQuery(q) => {
            let (value, method) = text(q.nick_name, q.method)?;
            UserQuery::NickName(value, method)
        }
        Query::DisplayNameQuery(q) => {
            let (value, method) = text(q.display_name, q.method)?;
            UserQuery::DisplayName(value, method)
        }
        Query::EmailQuery(q) => {
            let (value, method) = text(q.email_address, q.method)?;
            UserQuery::Email(value, method)
        }
        Query::LoginNameQuery(q) => {
            let (value, method) = text(q.login_name, q.method)?;
            UserQuery::LoginName(value, method)
        }
        Query::PhoneQuery(q) => UserQuery::Phone(q.number),
        Query::StateQuery(q) => UserQuery::State(match known("stateQuery.state", q.state)? {
            user::UserState::Active => engine::UserState::Active,
            user::UserState::Inactive => engine::UserState::Inactive,
            user::UserState::Deleted => engine::UserState::Deleted,
            user::UserState::Locked => engine::UserState::Locked,
            user::UserState::Initial => engine::UserState::Initial,
            user::UserState::Unspecified => {
                return Err(Error::invalid("stateQuery.state must be set"))
            }
        }),
        Query::TypeQuery(q) => UserQuery::Type(match known("typeQuery.type", q.r#type)? {
            user::Type::Human => UserKindFilter::Human,
            user::Type::Machine => UserKindFilter::Machine,
            user::Type::Unspecified => return Err(Error::invalid("typeQuery.type must be set")),
        }),
        Query::InUserIdsQuery(q) => UserQuery::InUserIds(q.user_ids),
        Query::InUserEmailsQuery(q) => UserQuery::InUserEmails(q.user_emails),
        Query::OrganizationIdQuery(q) => UserQuery::OrganizationId(q.organization_id),
        Query::OrQuery(q) => UserQuery::Or(convert_all(q.queries)?),
        Query::AndQuery(q) => UserQuery::And(convert_all(q.queries)?),
        Query::NotQuery(q) => {
            let inner = q
                .query
                .ok_or_else(|| Error::invalid("notQuery.query is required"))?;
            UserQuery::Not(Box::new(convert(*inner)?))
        }
    })
}

pub struct ListUsers;

impl Rpc for ListUsers {
    type Request = user::ListUsersRequest;
    type Response = user::ListUsersResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::ListUsersRequest,
    ) -> Result<user::ListUsersResponse, Error> {
        let query = request.query.unwrap_or_default();
        let column = known::<user::UserFieldName>("sortingColumn", request.sorting_column)?;
        let sort_by = match column {
            user::UserFieldName::Unspecified | user::UserFieldName::CreationDate => {
                SortBy::CreationDate
            }
            user::UserFieldName::UserName => SortBy::UserName,
            user::UserFieldName::FirstName => SortBy::FirstName,
            user::UserFieldName::LastName => SortBy::LastName,
            user::UserFieldName::NickName => SortBy::NickName,
            user::UserFieldName::DisplayName => SortBy::DisplayName,
            user::UserFieldName::Email => SortBy::Email,
            user::UserFieldName::State => SortBy::State,
            user::UserFieldName::Type => SortBy::Type,
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
        Ok(user::ListUsersResponse {
            details: Some(object::ListDetails {
                total_result: list.total_result,
                processed_sequence: list.processed_sequence,
                timestamp: Some(list.timestamp.into()),
            }),
            sorting_column: column as i32,
            result: list.result.into_iter().map(user_message).collect(),
        })
    }

    /// The page's users written directly, as GetUserByID's user (`get_user.rs`); the details
    /// through their protojson impl.
    fn write_json(response: &Self::Response, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut fields = JsonObject::open(out);
        if let Some(details) = &response.details {
            fields.key(br#""details":"#);
            serde_json::to_writer(&mut *fields.out, details)?;
        }
        if response.sorting_column != 0 {
            fields.key(br#""sortingColumn":"#);
            push_enum(
                fields.out,
                response.sorting_column,
                user::UserFieldName::try_from,
                |c| c.as_str_name(),
            )?;
        }
        if !response.result.is_empty() {
            fields.key(br#""result":["#);
            for (i, u) in response.result.iter().enumerate() {
                if i > 0 {
                    fields.out.push(b',');
                }
                push_user(fields.out, u)?;
            }
            fields.out.push(b']');
        }
        fields.close();
        Ok(())
    }
}
