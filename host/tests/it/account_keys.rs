//! Keys issued per account (issue 17), through the real `sluice serve`: a tenant issues
//! its customer a key that may submit mail billed to that customer's account and read
//! that account's usage, invoices and balance, and nothing else. The refusals are
//! checked route by route from `sluice::serve::auth::ROUTES`, the one table the server
//! decides by, so a route added to it is tried here too.

use crate::support::*;
use serde_json::{Value, json};
use sluice::serve::auth::{Access, ROUTES};

fn tenant_json(s: &Sluice, key: &str, method: &str, path: &str, body: Value) -> Response {
    s.request(
        method,
        path,
        Some(key),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn get(s: &Sluice, key: &str, path: &str) -> Response {
    s.request("GET", path, Some(key), None, b"")
}

/// `POST /v1/accounts/{account}/keys` with the tenant's key; the secret.
fn account_key(s: &Sluice, tenant_key: &str, account: &str) -> (String, String) {
    let r = tenant_json(
        s,
        tenant_key,
        "POST",
        &format!("/v1/accounts/{account}/keys"),
        json!({}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["account"], account, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

fn error_code(r: &Response) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// A route's path with its placeholders filled in.
fn fill(path: &str, id: &str, period: &str, key_id: &str) -> String {
    path.replace("{id}", id)
        .replace("{stage}", "bill")
        .replace("{period}", period)
        .replace("{address}", "x@example.net")
        .replace("{key_id}", key_id)
}

#[test]
fn an_account_key_submits_for_its_account_and_reads_only_its_own_books() {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("isp", &["isp.example"]),
        tenant_table("other", &["other.example"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (isp, other) = (s.new_key("isp"), s.new_key("other"));
    let tariff = "id = \"isp\"\ncurrency = \"EUR\"\nminor_units = 2\n[[service]]\nname = \"mail\"\nunit = \"message\"\ndirection = \"outbound\"\nprice = \"0.10\"\n";
    let r = tenant_json(
        &s,
        &isp,
        "PUT",
        "/v1/account-billing",
        json!({"tariff": tariff}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for (tenant_key, id, logins) in [
        (&isp, "shop", json!(["shop@isp.example"])),
        (&isp, "boss", json!(["boss@isp.example"])),
        (&other, "shop", json!([])),
    ] {
        let r = tenant_json(
            &s,
            tenant_key,
            "POST",
            "/v1/accounts",
            json!({"id": id, "logins": logins}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let (shop_key_id, shop) = account_key(&s, &isp, "shop");
    let (_, boss) = account_key(&s, &isp, "boss");
    let (_, other_shop) = account_key(&s, &other, "shop");
    // The secret is shown once: the listing has the prefix, not the key.
    let listed = get(&s, &isp, "/v1/accounts/shop/keys").json();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1), "{listed}");
    assert!(listed["keys"][0].get("key").is_none(), "{listed}");
    assert!(shop.starts_with(listed["keys"][0]["prefix"].as_str().unwrap()));
    // Keys are made for the tenant's own accounts only.
    let r = tenant_json(&s, &isp, "POST", "/v1/accounts/nope/keys", json!({}));
    assert_eq!(r.status, 404, "{}", r.body);

    // shop's key sends: billed to shop whatever the logins say (boss's sender here), and
    // a submission naming another account is refused, in JSON or raw.
    let by_shop = s.submit(
        &shop,
        &simple("boss@isp.example", "r@example.net", "shop's"),
    );
    let mut named = simple("shop@isp.example", "r@example.net", "named");
    named["account"] = json!("shop");
    let named_id = s.submit(&shop, &named);
    let mut m = simple("shop@isp.example", "r@example.net", "as boss");
    m["account"] = json!("boss");
    let r = s.post_message(&shop, &m);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "account", "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"boss\""),
        "{}",
        r.body
    );
    let mut m = simple("shop@isp.example", "r@example.net", "tagged");
    m["tags"] = json!(["account:boss"]);
    assert_eq!(s.post_message(&shop, &m).status, 403);
    let raw = b"From: shop@isp.example\r\nTo: r@example.net\r\nSubject: raw\r\n\r\nhi\r\n";
    for path in [
        "/v1/messages?from=shop@isp.example&to=r@example.net&account=boss",
        "/v1/messages?from=shop@isp.example&to=r@example.net&tags=account:boss",
    ] {
        let r = s.request("POST", path, Some(&shop), Some("message/rfc822"), raw);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    // Idempotency keys are the account's own: the tenant's "order-1" and shop's
    // "order-1" are two messages, and shop's repeat finds shop's.
    let mut keyed = simple("shop@isp.example", "r@example.net", "order");
    keyed["idempotency_key"] = json!("order-1");
    // The tenant's own from a sender no account's login names: nobody's customer.
    let mut tenants_own = simple("nobody@isp.example", "r@example.net", "tenant order");
    tenants_own["idempotency_key"] = json!("order-1");
    let tenant_order = s.submit(&isp, &tenants_own);
    let shop_order = s.submit(&shop, &keyed);
    assert_ne!(tenant_order, shop_order);
    let again = s.post_message(&shop, &keyed);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], shop_order.as_str());
    for id in [&by_shop, &named_id, &tenant_order, &shop_order] {
        s.wait_state(&isp, id, "delivered");
    }

    // shop reads its own books: its three messages, at its tenant's tariff.
    let charges = wait_for("shop's three charges", || {
        let r = get(&s, &shop, "/v1/accounts/shop/usage");
        let c = r.json()["charges"].as_array().cloned().unwrap_or_default();
        if r.status == 200 && c.len() == 3 {
            Ok(c)
        } else {
            Err(format!("{} {}\n{}", r.status, r.body, s.log()))
        }
    });
    let ids: Vec<&str> = charges
        .iter()
        .filter_map(|c| c["message_id"].as_str())
        .collect();
    for id in [&by_shop, &named_id, &shop_order] {
        assert!(ids.contains(&id.as_str()), "{id} in {charges:#?}");
    }
    let period = charges[0]["period"].as_str().unwrap().to_owned();
    let inv = get(&s, &shop, &format!("/v1/accounts/shop/invoices/{period}"));
    assert_eq!(inv.status, 200, "{}", inv.body);
    assert_eq!(inv.json()["total"], "0.30", "{}", inv.body);
    let auth = format!("Bearer {shop}");
    let csv = http(
        s.addr,
        "GET",
        &format!("/v1/accounts/shop/invoices/{period}"),
        &[("Authorization", &auth), ("Accept", "text/csv")],
        b"",
    )
    .unwrap();
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.body.contains("total,,,,0.30,EUR"), "{}", csv.body);
    let b = get(&s, &shop, "/v1/accounts/shop/balance");
    assert_eq!(
        (b.status, b.json()["charges"].as_str()),
        (200, Some("0.300000")),
        "{}",
        b.body
    );
    // The other tenant's "shop" is another account: its key reads its own, empty books.
    let r = get(&s, &other_shop, "/v1/accounts/shop/usage");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["charges"], json!([]), "{}", r.body);

    // Every other route of the tenant API, walked from the table the server decides by:
    // 403 with a JSON error, before anything is read or done. Routes that take an
    // account are tried with shop's own id (a tenant's route) and boss's (another
    // account's books).
    let mut tried = 0;
    for r in ROUTES {
        if r.access == Access::Submit {
            continue;
        }
        let ids: &[&str] = match r.access {
            Access::OwnAccount => &["boss"],
            _ => &["shop", "boss"],
        };
        for id in ids {
            let path = fill(r.path, id, &period, &shop_key_id);
            let resp = s.request(
                r.method,
                &path,
                Some(&shop),
                Some("application/json"),
                b"{}",
            );
            assert_eq!(
                (resp.status, error_code(&resp).as_str()),
                (403, "forbidden"),
                "{} {path}: {}",
                r.method,
                resp.body
            );
            tried += 1;
        }
        // The table names real routes: a tenant's key does not fall through to "no
        // such endpoint" (an account that does not exist keeps it from changing anything).
        let mut path = fill(r.path, "no-such-account", &period, "no-such-key");
        if path.ends_with("/stream") {
            // A stream never ends by itself: a bad cursor makes it answer at once.
            path.push_str("?after=not-a-cursor");
        }
        let resp = s.request(r.method, &path, Some(&isp), Some("application/json"), b"{");
        assert!(
            ![403, 405].contains(&resp.status) && !resp.body.contains("no such endpoint"),
            "{} {path} with the tenant's key: {} {}",
            r.method,
            resp.status,
            resp.body
        );
    }
    assert!(tried >= 30, "{tried} refusals tried");
    // Off the table: refused too (deny by default); the admin API does not know the key.
    let r = get(&s, &shop, "/v1/not-a-route");
    assert_eq!((r.status, error_code(&r).as_str()), (403, "forbidden"));
    assert_eq!(get(&s, &shop, "/admin/v1/tenants").status, 401);
    // Nothing of the above changed the tenant: still one key for shop, accounts intact.
    let listed = get(&s, &isp, "/v1/accounts").json();
    assert_eq!(
        listed["accounts"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // Revoked: the key is unknown at once, for sending and reading alike.
    let r = s.request(
        "DELETE",
        &format!("/v1/accounts/shop/keys/{shop_key_id}"),
        Some(&isp),
        None,
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.post_message(&shop, &simple("shop@isp.example", "r@example.net", "late"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(get(&s, &shop, "/v1/accounts/shop/usage").status, 401);
    let r = s.request(
        "DELETE",
        &format!("/v1/accounts/shop/keys/{shop_key_id}"),
        Some(&isp),
        None,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let listed = get(&s, &isp, "/v1/accounts/shop/keys").json();
    assert!(listed["keys"][0]["revoked_at_ms"].is_i64(), "{listed}");
    // A deleted account's keys die with it.
    assert_eq!(get(&s, &boss, "/v1/accounts/boss/balance").status, 200);
    let r = s.request("DELETE", "/v1/accounts/boss", Some(&isp), None, b"");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get(&s, &boss, "/v1/accounts/boss/balance").status, 401);
}
