//! Faults of the database, made by the tests themselves: every wait is bounded and answered.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use orders::{app::READY_BOUND, config::Settings};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    PrivateCluster, TestApp, assert_problem, eventually, order_body, spawn_app,
    spawn_app_on_cluster, spawn_app_with,
};

/// As long as a request may wait on a lock before it is answered: the lock timeout, and time
/// for the answer on a busy machine.
fn answer_bound() -> Duration {
    Settings::default().db_lock_timeout + Duration::from_secs(2)
}

#[tokio::test]
async fn a_table_locked_past_the_bound_is_a_prompt_503_and_everything_else_is_served() {
    let app = spawn_app().await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;

    // What a migration or a VACUUM FULL holds: no read or write of orders gets past it.
    let lock = app.lock_table("orders").await;

    let body = serde_json::json!({
        "datetime": "2023-06-01T10:00:00Z",
        "totalfee": 1,
        "services": [{ "id": service }],
    });
    let (order_path, service_path) = (
        format!("/orders/{}", order.id),
        format!("/services/{service}"),
    );
    let started = Instant::now();
    let (create, read, service_read, ready, live) = tokio::join!(
        app.post_json("/orders", &body),
        app.get(&order_path),
        app.get(&service_path),
        app.get("/readyz"),
        app.get("/healthz"),
    );
    let waited = started.elapsed();
    eprintln!("table locked: every request answered within {waited:?}");

    // Not starved: what does not touch orders is answered as usual.
    assert_eq!(service_read.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(live.status(), StatusCode::OK);
    for response in [create, read] {
        let problem = assert_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_TIMEOUT",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{problem}"
        );
    }
    assert!(
        waited < answer_bound(),
        "answered within the bound, not after {waited:?}"
    );

    // Released: everything works again at once, and the refused create left nothing.
    lock.release().await;
    assert_eq!(
        app.all_orders().await.len(),
        1,
        "the refused create wrote nothing"
    );
    let created = app.post_json("/orders", &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(app.get(&order_path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_503_for_a_timeout_says_when_to_retry() {
    let app = spawn_app().await;
    let lock = app.lock_table("services").await;

    let refused = app.get("/services").await;

    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        retry_after.parse::<u32>().is_ok_and(|seconds| seconds > 0),
        "{retry_after}"
    );
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "DATABASE_TIMEOUT").await;
    lock.release().await;
}

#[tokio::test]
async fn a_statement_that_outlasts_the_statement_timeout_is_cancelled_by_the_database_and_answered_503()
 {
    // A lock wait far longer than the statement timeout: only the statement timeout can end
    // the statements below, and the service's own bound (statement timeout + 1 s) comes later.
    let statement_timeout = Duration::from_secs(1);
    // The service's own bound: the statement timeout and a second (`SessionLimits::answer_bound`).
    let own_bound = statement_timeout + Duration::from_secs(1);
    let app = spawn_app_with(|settings| {
        settings.db_statement_timeout = statement_timeout;
        settings.db_lock_timeout = Duration::from_secs(60);
    })
    .await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    let lock = app.lock_table("orders").await;

    let order_path = format!("/orders/{}", order.id);
    let body = order_at_slot(1, &service);
    let (create, read) = tokio::join!(
        timed(app.post_json("/orders", &body)),
        timed(app.get(&order_path))
    );
    lock.release().await;

    for (what, (response, took)) in [("create", create), ("read", read)] {
        eprintln!("statement timeout: the {what} was answered after {took:?}");
        assert!(
            took >= statement_timeout && took < own_bound,
            "the {what} took {took:?}: not ended by the 1 s statement timeout"
        );
        let problem = assert_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_TIMEOUT",
        )
        .await;
        // Said only of statements the database itself cancelled: one cut off by the service's
        // own bound may still be carried out.
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{problem}"
        );
    }
    assert_eq!(app.all_orders().await.len(), 1, "the create wrote nothing");
    assert_eq!(app.get(&order_path).await.status(), StatusCode::OK);
}

/// As long as a request to a database that answers nothing may take: the service's own bound,
/// and time for the answer on a busy machine.
fn no_answer_bound() -> Duration {
    // The statement timeout, then a second of the service's own (`SessionLimits::answer_bound`).
    Settings::default().db_statement_timeout + Duration::from_secs(1) + Duration::from_secs(2)
}

/// As long as `/readyz` may take when the database answers nothing.
fn ready_bound() -> Duration {
    READY_BOUND + Duration::from_secs(2)
}

/// Sends `request` and returns its response with how long it took.
async fn timed(request: impl Future<Output = Response>) -> (Response, Duration) {
    let started = Instant::now();
    let response = request.await;
    (response, started.elapsed())
}

/// An order at the `n`th slot of a series 4 hours apart: no two clash.
fn order_at_slot(n: u64, service: &str) -> Value {
    let datetime = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap()
        + chrono::Duration::hours(4 * n as i64);
    order_body(&datetime.to_rfc3339(), json!(1), &[service])
}

/// Sends `request` until it answers `expected`, for at most `bound`; returns how long that took.
async fn until_answered(
    what: &str,
    expected: StatusCode,
    bound: Duration,
    mut request: impl AsyncFnMut() -> Response,
) -> Duration {
    let started = Instant::now();
    loop {
        let response = request().await;
        let status = response.status();
        if status == expected {
            return started.elapsed();
        }
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}: a 500");
        assert!(
            started.elapsed() < bound,
            "{what}: still {status} after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hung_database_is_a_503_within_the_bound_and_everything_works_again_when_it_resumes() {
    let cluster = PrivateCluster::start().await;
    let app = spawn_app_on_cluster(&cluster).await;
    let service = app.create_service("Inspection").await;
    let order = app
        .create_order("2023-05-01T10:00:00Z", 1.0, &[&service])
        .await;
    let order_path = format!("/orders/{}", order.id);

    // Every process of the server stopped: connections stay open, nothing is answered.
    let new_order = order_at_slot(1, &service);
    let paused = cluster.pause();
    // Bounded here too: requests that wait for the server would otherwise hang the test, as
    // the server goes on only when this is over.
    let answers = tokio::time::timeout(2 * no_answer_bound(), async {
        tokio::join!(
            timed(app.post_json("/orders", &new_order)),
            timed(app.get(&order_path)),
            timed(app.get("/services")),
            timed(app.get("/readyz")),
            app.get("/healthz"),
        )
    })
    .await;
    let ((create, create_took), (read, read_took), (list, list_took), (ready, ready_took), live) =
        answers.expect("every request is answered while the database hangs");
    eprintln!(
        "hung database: create {create_took:?}, read {read_took:?}, list {list_took:?}, \
         readyz {ready_took:?}"
    );

    assert_eq!(
        live.status(),
        StatusCode::OK,
        "liveness touches no database"
    );
    assert!(ready_took < ready_bound(), "/readyz took {ready_took:?}");
    assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE, "DATABASE_TIMEOUT").await;
    for (what, response, took) in [
        ("create", create, create_took),
        ("read", read, read_took),
        ("list", list, list_took),
    ] {
        assert!(took < no_answer_bound(), "{what} took {took:?}");
        assert_eq!(response.headers()["retry-after"], "5", "{what}");
        let problem = assert_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_TIMEOUT",
        )
        .await;
        // Nothing can be promised of a write the database never answered.
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("may still be carried out"),
            "{what}: {problem}"
        );
    }

    // Our own cut-offs are counted like the timeouts the server reports.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let timed_out: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("db_errors_total{kind=\"timed_out\"} "))
        .unwrap_or_else(|| panic!("no timed_out count in {metrics}"))
        .parse()
        .unwrap();
    assert!(
        timed_out >= 3.0,
        "{timed_out} cut-offs counted for 3 requests"
    );

    // Resumed: the service follows by itself, within the time its cut-off connections take to
    // be replaced.
    drop(paused);
    let bound = Duration::from_secs(5);
    let recovered = until_answered("read", StatusCode::OK, bound, async || {
        app.get(&order_path).await
    })
    .await;
    eprintln!("resumed: reads answered again after {recovered:?}");
    until_answered("create", StatusCode::CREATED, bound, async || {
        app.post_json("/orders", &order_at_slot(2, &service)).await
    })
    .await;
    until_answered("ready", StatusCode::OK, bound, async || {
        app.get("/readyz").await
    })
    .await;
}

/// One request of the steady load, as the client saw it.
#[derive(Debug)]
struct Outcome {
    at: Instant,
    what: &'static str,
    status: StatusCode,
    code: Option<String>,
    retry_after: Option<String>,
}

/// Creates an order at a slot of its own and reads it back, over and over, until `stop` is
/// set; adds every answer to `outcomes` as it comes.
async fn steady_load(
    app: Arc<TestApp>,
    service: String,
    worker: u64,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) {
    let record = |outcome| outcomes.lock().unwrap().push(outcome);
    let mut last_created: Option<String> = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let create = app
            .post_json("/orders", &order_at_slot(worker * 1_000_000 + n, &service))
            .await;
        let outcome = outcome_of("create", create).await;
        if outcome.status == StatusCode::CREATED {
            last_created = outcome.code.clone();
        }
        record(outcome);
        if let Some(id) = &last_created {
            let read = app.get(&format!("/orders/{id}")).await;
            record(outcome_of("read", read).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any outcome so far is one `wanted` says it is.
fn seen(outcomes: &Mutex<Vec<Outcome>>, wanted: impl Fn(&Outcome) -> bool) -> bool {
    outcomes.lock().unwrap().iter().any(wanted)
}

/// What a response says: its status, and its problem `code` (for a 201, the new order's id).
async fn outcome_of(what: &'static str, response: Response) -> Outcome {
    let at = Instant::now();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = if status == StatusCode::CREATED {
        body["id"].as_str().map(str::to_owned)
    } else {
        body["code"].as_str().map(str::to_owned)
    };
    Outcome {
        at,
        what,
        status,
        code,
        retry_after,
    }
}

#[tokio::test]
async fn a_database_stopped_and_restarted_under_load_is_503_while_down_and_served_again_after() {
    let mut cluster = PrivateCluster::start().await;
    let app = Arc::new(spawn_app_on_cluster(&cluster).await);
    let service = app.create_service("Inspection").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (1..=4)
        .map(|worker| {
            tokio::spawn(steady_load(
                Arc::clone(&app),
                service.clone(),
                worker,
                Arc::clone(&stop),
                Arc::clone(&load),
            ))
        })
        .collect();
    // Served, then stopped until the load has met the stopped database, then restarted until
    // creates and reads succeed past the recovery bound the assertions hold it to.
    let recovery = Duration::from_secs(3);
    eventually(
        "creates served before the stop",
        Duration::from_secs(10),
        || async { seen(&load, |outcome| outcome.status == StatusCode::CREATED) },
    )
    .await;
    let stopping = Instant::now();
    cluster.stop().await;
    let stopped = Instant::now();
    eventually(
        "503s while the database is down",
        Duration::from_secs(10),
        || async {
            seen(&load, |outcome| {
                outcome.at > stopped + Duration::from_millis(500)
                    && outcome.status == StatusCode::SERVICE_UNAVAILABLE
            })
        },
    )
    .await;
    // Down until the restart begins: the server may answer before `restart` returns.
    let restarting = Instant::now();
    cluster.restart().await;
    let restarted = Instant::now();
    for what in ["create", "read"] {
        eventually(
            &format!("{what}s served again after the restart"),
            Duration::from_secs(20),
            || async {
                seen(&load, |outcome| {
                    outcome.at > restarted + recovery
                        && outcome.what == what
                        && outcome.status.is_success()
                })
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let outcomes = std::mem::take(&mut *load.lock().unwrap());

    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|outcome| {
            let right = match outcome.status {
                StatusCode::OK | StatusCode::CREATED | StatusCode::CONFLICT => true,
                StatusCode::SERVICE_UNAVAILABLE => {
                    outcome.code.as_deref() == Some("DATABASE_UNAVAILABLE")
                        && outcome.retry_after.as_deref() == Some("5")
                }
                _ => false,
            };
            !right
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let down = outcomes
        .iter()
        // Answers read a moment after the stop may have been written before it.
        .filter(|outcome| (stopped + Duration::from_millis(500)..restarting).contains(&outcome.at))
        .collect::<Vec<_>>();
    assert!(!down.is_empty(), "requests were sent while it was down");
    assert!(
        down.iter()
            .all(|outcome| outcome.status == StatusCode::SERVICE_UNAVAILABLE),
        "while down, every answer is 503: {down:#?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|outcome| outcome.at < stopping && outcome.status == StatusCode::CREATED),
        "served before the stop"
    );
    let first_success_after_restart = outcomes
        .iter()
        .filter(|outcome| outcome.at > restarting && outcome.status.is_success())
        .map(|outcome| outcome.at - restarted.min(outcome.at))
        .min();
    eprintln!(
        "stopped and restarted: {} answers, {} of them 503 while down, none 500; \
         first success {first_success_after_restart:?} after the restart returned",
        outcomes.len(),
        down.len()
    );
    // Served again within a few seconds of the restart, with no restart of the service.
    let failing_late: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.at > restarted + recovery && !outcome.status.is_success())
        .collect();
    assert!(
        failing_late.is_empty(),
        "failing {recovery:?} after the restart: {failing_late:#?}"
    );
    for what in ["create", "read"] {
        assert!(
            outcomes
                .iter()
                .any(|outcome| outcome.at > restarted + recovery
                    && outcome.what == what
                    && outcome.status.is_success()),
            "{what}s succeed after the restart"
        );
    }
}

#[tokio::test]
async fn readyz_reports_a_saturated_pool_as_busy_not_as_an_unreachable_database() {
    // One connection, and limits long enough that the test decides when the wait ends.
    let app = spawn_app_with(|settings| {
        settings.db_pool_size = 1;
        settings.db_statement_timeout = Duration::from_secs(60);
        settings.db_lock_timeout = Duration::from_secs(60);
    })
    .await;
    let service = app.create_service("Inspection").await;
    let lock = app.lock_table("orders").await;

    // The pool's one connection waits on the lock, and another request waits for it.
    let first = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/orders"));
        let body = order_at_slot(1, &service);
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    });
    app.wait_for_a_lock_waiter("the first create", || !first.is_finished())
        .await;
    let second = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/orders"));
        async move { http.get(url).send().await.unwrap().status() }
    });
    let started = Instant::now();
    let report = loop {
        let (ready, took) = timed(app.get("/readyz")).await;
        assert!(took < ready_bound(), "/readyz took {took:?}");
        assert_eq!(ready.status(), StatusCode::OK);
        let report: Value = ready.json().await.unwrap();
        if report["pool"]["waiting"].as_u64() > Some(0) {
            break report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second request never waited: {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(
        report,
        json!({
            "status": "ok",
            "pool": { "max_size": 1, "size": 1, "available": 0, "waiting": 1 },
        })
    );
    lock.release().await;
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn a_database_server_that_is_killed_is_restarted_and_the_service_recovers_by_itself() {
    let cluster = PrivateCluster::start().await;
    let app = spawn_app_on_cluster(&cluster).await;
    let service = app.create_service("Inspection").await;
    // A throwaway cluster commits without waiting for its log to be written, so a crash
    // would lose the last moment's commits (the schema, here): write it all out first.
    let admin = app.pool.get().await.unwrap();
    admin.batch_execute("CHECKPOINT").await.unwrap();
    drop(admin);
    let killed = cluster.server_pid();

    kill(killed, Signal::SIGKILL).unwrap();

    // Orphaned backends leave, the supervisor starts the server again, and it recovers from
    // its log: a few seconds on a busy machine. Until they notice, an orphaned backend may
    // still answer a query, so the service is asked only once a new server has started: its
    // pool then holds only connections to backends that are gone.
    let bound = Duration::from_secs(30);
    cluster.server_other_than(killed, bound).await;
    until_answered("list", StatusCode::OK, bound, async || {
        app.get("/services").await
    })
    .await;
    until_answered("create", StatusCode::CREATED, bound, async || {
        app.post_json("/orders", &order_at_slot(1, &service)).await
    })
    .await;
    let services: Value = app.get("/services").await.json().await.unwrap();
    assert_eq!(
        services["services"][0]["id"], service,
        "what was committed is kept"
    );
}
