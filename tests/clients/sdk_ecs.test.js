'use strict';
/*
 * The official Huawei Cloud Node.js ECS SDK, unmodified, against an endpoint
 * that plays ECS: jobsim (tests/sim/jobsim --api ecs, in aksk mode) directly,
 * or jobgate in front of it.  The SDK is given only its endpoint and its
 * credentials, as a user would.
 *
 * Environment (see README.md):
 *   JG_ENDPOINT     the ECS endpoint the SDK talks to (required)
 *   JG_SIM_URL      jobsim's own URL, for its control API (/_sim/...);
 *                   default JG_ENDPOINT
 *   JG_PROJECT_ID   the project (default 32 zeros and ones)
 *   JG_AK, JG_SK    the credentials the SDK signs with (required)
 *   JG_GATEWAY=1    the endpoint is jobgate, not jobsim: the expectations
 *                   that differ (caching, jobgate's own codes) switch over
 *   JG_EXPECT_BAD_SIGNATURE_CODE  the errorCode a wrong SK gets
 *                   (default APIGW.0301, the API gateway's)
 *   JG_SKIP_CREATE=1  the endpoint cannot create yet (jobgate without
 *                   forward routes, issue 12 item 3): the createServers
 *                   tests are skipped and the jobs polled are made straight
 *                   at the simulator, signed with JG_SIM_AK / JG_SIM_SK
 *   JG_OTHER_AK, JG_OTHER_SK  (gateway) a client of jobgate granted another
 *                   project only: refused 403 JG.FORBIDDEN
 *   JG_CONNECT_TO   HOST:PORT: every host name the SDK calls is reached
 *                   there, through the SDK's own proxy setting
 *                   (withProxyAgent) and a CONNECT proxy this file runs:
 *                   the test's stand-in for a wildcard DNS name, so that the
 *                   endpoint can be http://ecs.REGION.jobgate.example
 *
 * Run: node --test sdk_ecs.test.js (Node's own runner; tests run in order).
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const core = require('@huaweicloud/huaweicloud-sdk-core');
const ecs = require('@huaweicloud/huaweicloud-sdk-ecs');

const { env, raw, sim, sdkError } = require('./common');

const { ENDPOINT, SIM_URL, PROJECT, AK, SK, GATEWAY, BAD_SIGNATURE_CODE } = env;
const SKIP_CREATE = process.env.JG_SKIP_CREATE === '1';
const CREATE_SKIP = SKIP_CREATE && 'JG_SKIP_CREATE: the endpoint has no forward routes yet (issue 12 item 3)';
const OTHER_AK = process.env.JG_OTHER_AK;
const OTHER_SK = process.env.JG_OTHER_SK;
const CONNECT_TO = process.env.JG_CONNECT_TO;
const POLL_MS = 100;
const POLL_DEADLINE_MS = 30000;

if (!ENDPOINT || !AK || !SK)
    throw new Error('set JG_ENDPOINT, JG_AK and JG_SK (see tests/clients/README.md)');

/*
 * JG_CONNECT_TO: a CONNECT proxy that takes every host name to HOST:PORT,
 * as a wildcard DNS name in front of jobgate would. The SDK's requests go
 * through it as they are (Host and signature for the endpoint's name).
 */
let proxyUrl;
test.before(async () => {
    if (!CONNECT_TO)
        return;
    const [host, port] = [CONNECT_TO.slice(0, CONNECT_TO.lastIndexOf(':')), CONNECT_TO.slice(CONNECT_TO.lastIndexOf(':') + 1)];
    const proxy = http.createServer((req, res) => res.writeHead(405).end());
    proxy.on('connect', (req, client, head) => {
        const upstream = net.connect(Number(port), host, () => {
            client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
            upstream.write(head);
            upstream.pipe(client);
            client.pipe(upstream);
        });
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        upstream.unref();
    });
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    proxy.unref();
    proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
});

/* The SDK as a user sets it up: an endpoint and credentials, nothing else
 * (and, with JG_CONNECT_TO, the SDK's proxy setting). */
function ecsClient(sk = SK, ak = AK, endpoint = ENDPOINT) {
    const credentials = new core.BasicCredentials().withAk(ak).withSk(sk).withProjectId(PROJECT);
    const builder = ecs.EcsClient.newBuilder().withCredential(credentials).withEndpoint(endpoint);
    if (proxyUrl && endpoint === ENDPOINT)
        builder.withProxyAgent(proxyUrl);
    return builder.build();
}

/* The smallest body ECS accepts for a pay-per-use server. */
function createServersRequest(name, count) {
    const server = new ecs.PrePaidServer()
        .withImageRef('1189efbf-d48b-46ad-a823-94b942e2a000')
        .withFlavorRef('s6.small.1')
        .withName(name)
        .withVpcid('0dae26c9-9a70-4392-93f1-f8a0a0a0a0a0')
        .withNics([new ecs.PrePaidServerNic().withSubnetId('ae29ac58-3ab8-4b0b-9a0e-0e0e0e0e0e0e')])
        .withRootVolume(new ecs.PrePaidServerRootVolume().withVolumetype('SSD'));
    if (count !== undefined)
        server.withCount(count);
    return new ecs.CreateServersRequest().withBody(new ecs.CreateServersRequestBody().withServer(server));
}

const stats = () => sim('GET', '/_sim/stats');

/*
 * Through jobgate a 429 from the cloud backs the whole ECS upstream off for
 * its Retry-After (1 s here) or jobgate's throttle_backoff: jobgate itself
 * answers 503 meanwhile. A test that follows a throttled one waits that out.
 */
const afterThrottle = () => (GATEWAY ? new Promise((r) => setTimeout(r, 1300)) : Promise.resolve());
const postsOf = (s) => s.posts[PROJECT] || 0;

const SIGNED_BY_SDK = 'content-type;host;x-project-id;x-sdk-date';

/* Headers by lower-case name. */
function lowerKeys(headers) {
    return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

let created; /* the answer of the first createServers, for the tests after it */

/* A new job to poll: made through the endpoint, or (JG_SKIP_CREATE) by the
 * same SDK straight at the simulator with the simulator's own credentials. */
async function newJob(name, count) {
    if (!SKIP_CREATE)
        return ecsClient().createServers(createServersRequest(name, count));
    const simAk = process.env.JG_SIM_AK, simSk = process.env.JG_SIM_SK;
    assert.ok(simAk && simSk, 'JG_SKIP_CREATE needs JG_SIM_AK and JG_SIM_SK');
    return ecsClient(simSk, simAk, SIM_URL).createServers(createServersRequest(name, count));
}

test('createServers returns a job_id; exactly one POST reaches the cloud', { skip: CREATE_SKIP }, async () => {
    const before = await stats();
    const answer = await ecsClient().createServers(createServersRequest('sdk-one', 2));
    const after = await stats();

    assert.equal(answer.httpStatusCode, 200);
    assert.match(answer.job_id, /^[0-9a-f]{32}$/, `job_id in ${JSON.stringify(answer)}`);
    assert.equal(answer.serverIds.length, 2);
    assert.equal(postsOf(after) - postsOf(before), 1, 'POSTs received for the project');
    assert.equal(after.creates - before.creates, 1, 'jobs made');
    created = answer;
});

test('showJob polls go INIT, RUNNING, SUCCESS; the sub-jobs carry the serverIds', async () => {
    if (SKIP_CREATE)
        created = await newJob('sdk-one', 2);
    assert.ok(created, 'createServers did not run');
    const client = ecsClient();
    const seen = [];
    const deadline = Date.now() + POLL_DEADLINE_MS;
    let polls = 0;
    let job;

    do {
        job = await client.showJob(new ecs.ShowJobRequest(created.job_id));
        polls++;
        assert.equal(job.job_id, created.job_id);
        if (seen[seen.length - 1] !== job.status)
            seen.push(job.status);
        if (job.status !== 'SUCCESS')
            await new Promise((r) => setTimeout(r, POLL_MS));
    } while (job.status !== 'SUCCESS' && Date.now() < deadline);

    /* A slow machine may miss a short phase, never reorder them. */
    const order = ['INIT', 'RUNNING', 'SUCCESS'];
    assert.equal(seen[seen.length - 1], 'SUCCESS', `states seen: ${seen}`);
    assert.deepEqual(seen, order.filter((s) => seen.includes(s)), `states seen in order: ${seen}`);
    assert.equal(job.entities.sub_jobs_total, 2);
    assert.deepEqual(job.entities.sub_jobs.map((s) => s.entities.server_id).sort(), [...created.serverIds].sort());
    assert.ok(job.entities.sub_jobs.every((s) => s.status === 'SUCCESS'));

    const upstream = (await stats()).jobs[created.job_id] || 0;
    if (GATEWAY)
        assert.ok(upstream < polls, `cached between upstream calls: ${upstream} upstream for ${polls} polls`);
    else
        assert.equal(upstream, polls, 'every poll reached jobsim');
});

test('a wrong SK is refused with 401 and its errorCode in the SDK exception', async () => {
    const before = await stats();
    const error = await sdkError(ecsClient(SK + 'x').showJob(new ecs.ShowJobRequest(created.job_id)));

    assert.equal(error.httpStatusCode, 401, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
    assert.equal(error.errorCode, BAD_SIGNATURE_CODE, error.errorMsg);
    assert.ok(error.errorMsg, 'a message');

    const create = await sdkError(ecsClient(SK + 'x').createServers(createServersRequest('sdk-bad-sk')));
    assert.equal(create.httpStatusCode, 401);
    assert.equal(create.errorCode, BAD_SIGNATURE_CODE, create.errorMsg);
    assert.equal((await stats()).creates, before.creates, 'no job made');
});

test('a grant for another project is refused 403 with its code', { skip: !GATEWAY && 'jobgate only' }, async () => {
    assert.ok(OTHER_AK && OTHER_SK, 'set JG_OTHER_AK and JG_OTHER_SK: a client granted another project');
    const before = (await stats()).jobs[created.job_id] || 0;
    const error = await sdkError(ecsClient(OTHER_SK, OTHER_AK).showJob(new ecs.ShowJobRequest(created.job_id)));

    assert.equal(error.httpStatusCode, 403, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
    assert.equal(error.errorCode, 'JG.FORBIDDEN', error.errorMsg);
    assert.ok(error.errorMsg, 'a message');
    assert.equal((await stats()).jobs[created.job_id] || 0, before, 'nothing reached the cloud');
});

test('an access key jobgate does not know is refused 401 with its code', { skip: !GATEWAY && 'jobgate only' },
    async () => {
        const error = await sdkError(ecsClient(SK, AK + 'x').showJob(new ecs.ShowJobRequest(created.job_id)));
        assert.equal(error.httpStatusCode, 401);
        assert.equal(error.errorCode, 'JG.UNKNOWN_ACCESS_KEY', error.errorMsg);
    });

/* The README's promise: the cloud's own code reaches the client through jobgate. */
test('a job the cloud reports missing reaches the SDK as ELB.1002', async () => {
    const job = (await newJob('sdk-missing')).job_id;
    await sim('POST', `/_sim/faults?job=${job}&kind=status&status=404&shape=elb&count=100`);
    try {
        const error = await sdkError(ecsClient().showJob(new ecs.ShowJobRequest(job)));
        assert.equal(error.httpStatusCode, 404, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
        assert.equal(error.errorCode, 'ELB.1002', error.errorMsg);
        assert.equal(error.errorMsg, 'find lb failed');
    } finally {
        await sim('DELETE', '/_sim/faults');
    }
});

test('a throttled job poll (429) yields errorCode APIGW.0308', async () => {
    const job = (await newJob('sdk-throttled')).job_id;
    await sim('POST', `/_sim/faults?job=${job}&kind=status&status=429&shape=apigw&retry_after=1&count=100`);
    try {
        const error = await sdkError(ecsClient().showJob(new ecs.ShowJobRequest(job)));
        if (GATEWAY) {
            /* jobgate answers a throttled cloud itself (or serves what it knows). */
            assert.ok([429, 503].includes(error.httpStatusCode), `status ${error.httpStatusCode}`);
            assert.match(error.errorCode || '', /^(APIGW\.0308|JG\.[A-Z_]+)$/, error.errorMsg);
        } else {
            assert.equal(error.httpStatusCode, 429);
            assert.equal(error.errorCode, 'APIGW.0308', error.errorMsg);
            assert.equal(error.errorMsg, 'The request is throttled.');
        }
    } finally {
        await sim('DELETE', '/_sim/faults');
    }
});

test('a throttled createServers (429) yields APIGW.0308 and makes no job', { skip: CREATE_SKIP }, async () => {
    await afterThrottle();
    await sim('POST', '/_sim/faults?on=create&kind=status&status=429&shape=apigw&count=1');
    try {
        const before = await stats();
        const error = await sdkError(ecsClient().createServers(createServersRequest('sdk-throttled-create')));
        const after = await stats();

        assert.equal(error.httpStatusCode, 429);
        assert.equal(error.errorCode, 'APIGW.0308', error.errorMsg);
        assert.equal(postsOf(after) - postsOf(before), 1, 'the POST reached the cloud once');
        assert.equal(after.creates, before.creates, 'no job made');
    } finally {
        await sim('DELETE', '/_sim/faults');
    }
});

test('a bad body gets ECS\'s 400 Ecs.0005 in the SDK exception', { skip: CREATE_SKIP }, async () => {
    await afterThrottle();
    const request = createServersRequest('sdk-bad-body');
    request.body.server.withRootVolume(new ecs.PrePaidServerRootVolume()); /* no volumetype */
    const error = await sdkError(ecsClient().createServers(request));

    assert.equal(error.httpStatusCode, 400);
    assert.equal(error.errorCode, 'Ecs.0005', error.errorMsg);
    assert.match(error.errorMsg, /volumetype/);
});

test('the same X-Client-Token twice makes one job (ECS idempotency)', { skip: CREATE_SKIP }, async () => {
    const token = `sdk-${process.pid}-${Date.now()}`;
    const before = await stats();
    const first = await ecsClient().createServers(createServersRequest('sdk-idem').withXClientToken(token));
    const again = await ecsClient().createServers(createServersRequest('sdk-idem').withXClientToken(token));
    const after = await stats();

    assert.equal(again.job_id, first.job_id);
    assert.deepEqual(again.serverIds, first.serverIds);
    assert.equal(postsOf(after) - postsOf(before), 2, 'both POSTs reached the cloud');
    assert.equal(after.creates - before.creates, 1, 'one job made');
});

/*
 * What the SDK sends, seen by jobsim (direct only: through jobgate the
 * simulator sees jobgate's request).  Replaying the SDK's own signed POST
 * passes; the same bytes with one body byte or the content-type changed are
 * refused: the signature covers the body and the signed headers.
 */
test('the SDK signs content-type, host, x-project-id, x-sdk-date and the body', { skip: GATEWAY && 'direct to jobsim only' },
    async (t) => {
        await ecsClient().createServers(createServersRequest('sdk-replay'));
        const last = await sim('GET', '/_sim/last');
        const sent = lowerKeys(last.headers);

        t.diagnostic(`createServers sent: ${last.method} ${last.path} ${JSON.stringify(last.headers)} ${last.body}`);
        assert.equal(last.method, 'POST');
        assert.equal(last.path, `/v1.1/${PROJECT}/cloudservers`);
        assert.equal(sent['content-type'], 'application/json');
        assert.equal(sent['x-project-id'], PROJECT);
        assert.match(sent['x-sdk-date'], /^\d{8}T\d{6}Z$/);
        assert.match(sent.authorization,
            new RegExp(`^SDK-HMAC-SHA256 Access=${AK}, SignedHeaders=${SIGNED_BY_SDK}, Signature=[0-9a-f]{64}$`));
        assert.equal(JSON.parse(last.body).server.name, 'sdk-replay');

        const replay = (headers, body) =>
            raw('POST', new URL(last.path, ENDPOINT), { ...last.headers, ...headers }, body);
        const again = await replay({}, last.body);
        assert.equal(again.status, 200, `the replay itself passes: ${JSON.stringify(again.body)}`);

        const tampered = await replay({}, last.body.replace('sdk-replay', 'sdk-replaz'));
        assert.equal(tampered.status, 401, 'one body byte changed');
        assert.equal(tampered.body.error_code, 'APIGW.0301');

        const retyped = await replay({ 'Content-Type': 'application/json;charset=UTF-8' }, last.body);
        assert.equal(retyped.status, 401, 'a signed header changed');
    });
