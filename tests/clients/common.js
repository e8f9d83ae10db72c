'use strict';
/*
 * What the SDK test files share: the settings every one of them reads from
 * the environment (README.md: JG_ENDPOINT, JG_SIM_URL, JG_PROJECT_ID,
 * JG_AK, JG_SK, JG_GATEWAY, JG_EXPECT_BAD_SIGNATURE_CODE), one request
 * helper, jobsim's control API and the SDK's exceptions.
 */
const assert = require('node:assert/strict');
const http = require('node:http');

const ENDPOINT = process.env.JG_ENDPOINT;

const env = {
    ENDPOINT,
    SIM_URL: process.env.JG_SIM_URL || ENDPOINT,
    PROJECT: process.env.JG_PROJECT_ID || '0101010101010101010101010101010101'.slice(0, 32),
    AK: process.env.JG_AK,
    SK: process.env.JG_SK,
    GATEWAY: process.env.JG_GATEWAY === '1',
    BAD_SIGNATURE_CODE: process.env.JG_EXPECT_BAD_SIGNATURE_CODE || 'APIGW.0301',
};

/* One HTTP request; resolves to {status, headers, body (parsed JSON when it is)}. */
function raw(method, url, headers = {}, body) {
    return new Promise((resolve, reject) => {
        const req = http.request(url, { method, headers }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let parsed = text;
                try {
                    parsed = text ? JSON.parse(text) : null;
                } catch (e) {
                    /* not JSON: keep the text */
                }
                resolve({ status: res.statusCode, headers: res.headers, body: parsed });
            });
        });
        req.on('error', reject);
        if (body !== undefined)
            req.write(body);
        req.end();
    });
}

/* One request to jobsim's control API (/_sim/...): its parsed body; fails unless 200. */
async function sim(method, path) {
    const answer = await raw(method, new URL(path, env.SIM_URL));
    assert.equal(answer.status, 200, `jobsim ${method} ${path}: ${JSON.stringify(answer.body)}`);
    return answer.body;
}

/* The exception the SDK throws for "promise"; fails if it resolves. */
async function sdkError(promise) {
    try {
        const answer = await promise;
        assert.fail(`expected an error, got ${JSON.stringify(answer)}`);
    } catch (e) {
        if (e instanceof assert.AssertionError)
            throw e;
        return e;
    }
}

module.exports = { env, raw, sim, sdkError };
