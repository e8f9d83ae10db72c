/*
 * request: intake of one client request (gateway_handle hands it over):
 * size bounds, route match, client checks, the cache key and the cache
 * lookup; a hit is answered, a miss joins the key's flight (flight.h).
 * The request's state and the answering functions are in gateway_int.h.
 * Event-loop thread only.
 */
#ifndef JOBGATE_REQUEST_H
#define JOBGATE_REQUEST_H

struct evhttp_request;
struct gateway;

/* Take `req` in. Answers it, or looks its key up and, on a miss, joins it
 * to the key's flight. `client_auth`: the listener requires a client key. */
void request_intake(struct gateway *gw, struct evhttp_request *req, int client_auth);

/* Is the client's own X-Auth-Token what goes upstream? */
int request_pass_through(const struct gateway *gw);

#endif
