'use strict';
/*
 * The official Huawei Cloud Node.js CCE SDK, unmodified, polling CCE jobs
 * (ShowJob: GET /api/v3/projects/{project_id}/jobs/{job_id}, the state in
 * status.phase) at an endpoint that plays CCE: jobsim (tests/sim/jobsim
 * --api cce, in aksk mode) directly, or jobgate in front of it (the shipped
 * lua-free-rules/cce.yaml; CCE's paths are jobgate's own, so the endpoint is
 * jobgate's root).  The SDK is given only its endpoint and its credentials.
 *
 * The jobs are made through jobsim's control API (POST /_sim/jobs/{id}):
 * the CCE SDK's create calls (createCluster ...) are not played.
 *
 * Environment (the same names as sdk_ecs.test.js; see README.md):
 *   JG_ENDPOINT     the CCE endpoint the SDK talks to (required)
 *   JG_SIM_URL      jobsim's own URL, for its control API; default JG_ENDPOINT
 *   JG_PROJECT_ID   the project (default 32 zeros and ones)
 *   JG_AK, JG_SK    the credentials the SDK signs with (required)
 *   JG_GATEWAY=1    the endpoint is jobgate: polls between upstream calls
 *                   must come from its cache
 *   JG_EXPECT_BAD_SIGNATURE_CODE  the errorCode a wrong SK gets
 *                   (default APIGW.0301, the API gateway's)
 *
 * Run: node --test sdk_cce.test.js (Node's own runner; tests run in order).
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const core = require('@huaweicloud/huaweicloud-sdk-core');
const cce = require('@huaweicloud/huaweicloud-sdk-cce');

const { env, sim, sdkError } = require('./common');

const { ENDPOINT, PROJECT, AK, SK, GATEWAY, BAD_SIGNATURE_CODE } = env;
const POLL_MS = 100;
const POLL_DEADLINE_MS = 30000;

if (!ENDPOINT || !AK || !SK)
    throw new Error('set JG_ENDPOINT, JG_AK and JG_SK (see tests/clients/README.md)');

/* The SDK as a user sets it up: an endpoint and credentials, nothing else. */
function cceClient(sk = SK, ak = AK) {
    const credentials = new core.BasicCredentials().withAk(ak).withSk(sk).withProjectId(PROJECT);
    return cce.CceClient.newBuilder().withCredential(credentials).withEndpoint(ENDPOINT).build();
}

const upstreamCalls = async (job) => (await sim('GET', '/_sim/stats')).jobs[job] || 0;

/* A CCE job (a UUID, as CCE's ids are) with its timeline, defined at jobsim. */
async function newJob(final = 'Success') {
    const job = crypto.randomUUID();
    await sim('POST', `/_sim/jobs/${job}?init_ms=300&running_ms=600&final=${final}`);
    return job;
}

/* Polls showJob until status.phase is `until`; the phases seen, the last answer, the polls made. */
async function pollUntil(job, until) {
    const client = cceClient();
    const seen = [];
    const deadline = Date.now() + POLL_DEADLINE_MS;
    let polls = 0;
    let answer;

    do {
        answer = await client.showJob(new cce.ShowJobRequest(job));
        polls++;
        assert.equal(answer.httpStatusCode, 200);
        assert.equal(answer.metadata.uid, job, 'the answer names the job asked for');
        if (seen[seen.length - 1] !== answer.status.phase)
            seen.push(answer.status.phase);
        if (answer.status.phase !== until)
            await new Promise((r) => setTimeout(r, POLL_MS));
    } while (answer.status.phase !== until && Date.now() < deadline);
    return { seen, answer, polls };
}

test('showJob polls go Initializing, Running, Success; between upstream calls jobgate answers from its cache',
    async () => {
        const job = await newJob();
        const { seen, answer, polls } = await pollUntil(job, 'Success');

        /* A slow machine may miss a short phase, never reorder them. */
        const order = ['Initializing', 'Running', 'Success'];
        assert.equal(seen[seen.length - 1], 'Success', `phases seen: ${seen}`);
        assert.deepEqual(seen, order.filter((s) => seen.includes(s)), `phases seen in order: ${seen}`);
        assert.equal(answer.kind, 'Job');
        assert.equal(answer.apiVersion, 'v3');
        assert.ok(answer.spec.subJobs.length > 0, 'sub-jobs');
        assert.ok(answer.spec.subJobs.every((s) => s.status.phase === 'Success'), 'every sub-job succeeded');

        const upstream = await upstreamCalls(job);
        if (GATEWAY)
            assert.ok(upstream < polls, `cached between upstream calls: ${upstream} upstream for ${polls} polls`);
        else
            assert.equal(upstream, polls, 'every poll reached jobsim');

        /* Success is terminal: through jobgate it is served from the cache from now on. */
        const again = await cceClient().showJob(new cce.ShowJobRequest(job));
        assert.equal(again.status.phase, 'Success');
        assert.equal(await upstreamCalls(job), GATEWAY ? upstream : upstream + 1, 'upstream calls after Success');
    });

test('a failed job ends in phase Failed with its reason', async () => {
    const job = await newJob('Failed');
    const { seen, answer } = await pollUntil(job, 'Failed');

    assert.equal(seen[seen.length - 1], 'Failed', `phases seen: ${seen}`);
    assert.ok(answer.status.reason, 'a reason');
});

/* CCE's gateway answers an unknown job in the API gateway's flat shape; the code reaches the SDK. */
test('a missing job reaches the SDK as a 404 with errorCode CCE.01404001', async () => {
    const job = crypto.randomUUID();
    await sim('POST', `/_sim/faults?job=${job}&kind=status&status=404&shape=apigw&code=CCE.01404001` +
        '&message=Job%20not%20found&count=100');
    try {
        const error = await sdkError(cceClient().showJob(new cce.ShowJobRequest(job)));
        assert.equal(error.httpStatusCode, 404, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
        assert.equal(error.errorCode, 'CCE.01404001', error.errorMsg);
        assert.equal(error.errorMsg, 'Job not found');
    } finally {
        await sim('DELETE', '/_sim/faults');
    }
});

test('a wrong SK is refused with 401 and its errorCode in the SDK exception', async () => {
    const job = await newJob();
    const error = await sdkError(cceClient(SK + 'x').showJob(new cce.ShowJobRequest(job)));

    assert.equal(error.httpStatusCode, 401, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
    assert.equal(error.errorCode, BAD_SIGNATURE_CODE, error.errorMsg);
    if (GATEWAY)
        assert.equal(await upstreamCalls(job), 0, 'jobgate refused it: nothing reached the cloud');
});

test('a job id that is not a UUID is refused 400 JG.INVALID_REQUEST', { skip: !GATEWAY && 'jobgate only' },
    async () => {
        const error = await sdkError(cceClient().showJob(new cce.ShowJobRequest('0123456789abcdef0123456789abcdef')));
        assert.equal(error.httpStatusCode, 400, `${error.name}: ${error.errorCode} ${error.errorMsg}`);
        assert.equal(error.errorCode, 'JG.INVALID_REQUEST', error.errorMsg);
    });
