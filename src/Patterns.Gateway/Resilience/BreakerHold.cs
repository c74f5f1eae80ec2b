using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Health;
using Polly;
using Polly.CircuitBreaker;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// One attempt under a destination's circuit breaker whose answer is not a failure by its headers: the answer goes to the
/// forwarder at once, but the breaker's execution stays open until the request is done, so that the breaker counts the
/// answer once, as a success when its body came through (or the client left during it) and as a failure when the
/// destination broke it off (<see cref="OutlierDetector.ResponseBodyBrokenOff"/>, the signal outlier detection reads). A trial
/// in the half-open state is judged by its headers, so that a long stream does not hold the circuit half-open, and so is
/// an attempt of a request outside the gateway's proxy pipeline (no <see cref="BreakerHolds"/>). A held answer whose request
/// ends while the circuit is half-open began before the circuit opened: it waits until the trial has decided (Polly closes a
/// half-open circuit on any success and opens it on any failure), and the request does not wait for it.
/// </summary>
internal sealed class BreakerHold
{
    /// <summary>The outcome the breaker counts for an answer whose body the destination broke off.</summary>
    public static readonly IOException BodyBrokenOff = new("The destination broke off the body of its answer after the headers.");

    private readonly TaskCompletionSource<Outcome<HttpResponseMessage>> _answer = new();
    private readonly TaskCompletionSource<bool> _body = new();
    private readonly TaskCompletionSource _settled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> _send;
    private readonly HttpContext _context;
    private readonly HttpRequestMessage _message;
    private readonly AttemptPipelines _pipelines;

    private BreakerHold(Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> send, HttpContext context, DestinationState destination, HttpRequestMessage message, AttemptPipelines pipelines)
    {
        _send = send;
        _context = context;
        Destination = destination;
        _message = message;
        _pipelines = pipelines;
    }

    public DestinationState Destination { get; }

    /// <summary>
    /// Gets a task complete once the breaker has counted this attempt, or once it was released while the circuit is half-open
    /// (it is then counted after the trial, see <see cref="CircuitTransitions.WhileHalfOpenAsync"/>).
    /// </summary>
    public Task Completion => _settled.Task;

    /// <summary>
    /// Runs one attempt through the destination's breaker (and its attempt timeout and added strategies, inside it): the
    /// outcome comes when the answer's headers do (or the attempt failed); the breaker counts it then, or when the request is done.
    /// </summary>
    public static Task<Outcome<HttpResponseMessage>> RunAsync<TState>(
        Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> send, HttpContext context, DestinationState destination, HttpRequestMessage message,
        AttemptPipelines pipelines, ResiliencePropertyKey<TState> key, TState state, CancellationToken cancellationToken)
    {
        var hold = new BreakerHold(send, context, destination, message, pipelines);
        var resilienceContext = ResilienceContextPool.Shared.Get(cancellationToken);
        resilienceContext.Properties.Set(key, state);
        _ = hold.ExecuteAsync(resilienceContext); // Never throws: its outcome goes to the answer, its end to Completion.
        return hold._answer.Task;
    }

    /// <summary>The request is done: the breaker counts the held answer, a failure when <paramref name="brokenOff"/>.</summary>
    public void Release(bool brokenOff) => _body.TrySetResult(brokenOff);

    private async Task ExecuteAsync(ResilienceContext context)
    {
        try
        {
            var outcome = await _pipelines.Breaker!.ExecuteOutcomeAsync(static (ctx, self) => self.AttemptAsync(ctx), context, this).ConfigureAwait(false);
            _answer.TrySetResult(outcome);
        }
        catch (Exception ex)
        {
            _answer.TrySetResult(Outcome.FromException<HttpResponseMessage>(ex));
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
            _settled.TrySetResult();
        }
    }

    private async ValueTask<Outcome<HttpResponseMessage>> AttemptAsync(ResilienceContext context)
    {
        var outcome = _pipelines.Inner is { } inner
            ? await inner.ExecuteOutcomeAsync(static (ctx, self) => self.SendAsync(ctx), context, this).ConfigureAwait(false)
            : await SendAsync(context).ConfigureAwait(false);
        if (outcome.Exception is not null
            || outcome.Result is not { } response
            || (int)response.StatusCode >= 500
            || _pipelines.Circuit!.CircuitState != CircuitState.Closed
            || _context.Features.Get<BreakerHolds>() is not { } holds
            || !holds.TryAdd(this))
        {
            // Judged now: a failure, a trial of the half-open circuit, or a request with nobody to release the hold.
            return outcome;
        }

        _answer.TrySetResult(outcome);
        var brokenOff = await _body.Task.ConfigureAwait(false);
        if (_pipelines.Circuit!.CircuitState == CircuitState.HalfOpen)
        {
            // Held since before the circuit opened: its trial, not this answer, decides whether the circuit closes again.
            _settled.TrySetResult();
            await _pipelines.Transitions!.WhileHalfOpenAsync(_pipelines.Circuit).ConfigureAwait(false);
        }

        return brokenOff ? Outcome.FromException<HttpResponseMessage>(BodyBrokenOff) : outcome;
    }

    private async ValueTask<Outcome<HttpResponseMessage>> SendAsync(ResilienceContext context)
    {
        try
        {
            return Outcome.FromResult(await _send(_message, context.CancellationToken).ConfigureAwait(false));
        }
        catch (Exception ex)
        {
            return Outcome.FromException<HttpResponseMessage>(ex);
        }
    }
}

/// <summary>The held breaker executions of one request (<see cref="BreakerHold"/>), released by the proxy pipeline once the request is done.</summary>
internal sealed class BreakerHolds
{
    private List<BreakerHold>? _holds;
    private bool _released;

    /// <summary>
    /// Last in the proxy pipeline, for a request whose cluster policy has a circuit breaker: after the forwarder is done (the
    /// body forwarded or given up, YARP's error known), every held answer is counted, before the response completes.
    /// </summary>
    public static Func<HttpContext, RequestDelegate, Task> Middleware(ResiliencePolicyRegistry registry) => (context, next) =>
        context.Features.Get<IReverseProxyFeature>() is { Cluster: not null } feature && ClusterPolicy.Effective(feature, registry, context).Breaker is not null
            ? ReleaseAfterAsync(context, next)
            : next(context);

    private static async Task ReleaseAfterAsync(HttpContext context, RequestDelegate next)
    {
        var holds = new BreakerHolds();
        context.Features.Set(holds);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            await holds.ReleaseAsync(context).ConfigureAwait(false);
        }
    }

    /// <summary>Adds a hold; false once the request is done (a hedge that lost, answering late): it is judged by its headers.</summary>
    public bool TryAdd(BreakerHold hold)
    {
        lock (this)
        {
            if (_released)
            {
                return false;
            }

            (_holds ??= []).Add(hold);
            return true;
        }
    }

    private async Task ReleaseAsync(HttpContext context)
    {
        List<BreakerHold>? holds;
        lock (this)
        {
            _released = true;
            holds = _holds;
            _holds = null;
        }

        if (holds is null)
        {
            return;
        }

        // Only the answer that went to the client had its body forwarded; another (a hedge that lost) was a success.
        var brokenOff = OutlierDetector.ResponseBodyBrokenOff(context);
        var answered = context.Features.Get<IReverseProxyFeature>()?.ProxiedDestination;
        foreach (var hold in holds)
        {
            hold.Release(brokenOff && ReferenceEquals(hold.Destination, answered));
        }

        foreach (var hold in holds)
        {
            await hold.Completion.ConfigureAwait(false);
        }
    }
}

/// <summary>The pipelines of one destination's attempts under a cluster policy: the breaker alone, and what runs inside it.</summary>
internal sealed class AttemptPipelines
{
    /// <summary>Gets the circuit breaker, or <see langword="null"/> when the policy has none.</summary>
    public ResiliencePipeline<HttpResponseMessage>? Breaker { get; init; }

    /// <summary>Gets the state of <see cref="Breaker"/>.</summary>
    public CircuitBreakerStateProvider? Circuit { get; init; }

    /// <summary>Gets the attempt timeout and the strategies the policy adds, or <see langword="null"/> when it has neither.</summary>
    public ResiliencePipeline<HttpResponseMessage>? Inner { get; init; }

    /// <summary>Gets the signal of <see cref="Breaker"/>'s circuit opening or closing, or <see langword="null"/> without a breaker.</summary>
    public CircuitTransitions? Transitions { get; init; }
}

/// <summary>Signals a circuit opening or closing (its breaker's <c>OnOpened</c> and <c>OnClosed</c>), for held answers that wait out a half-open circuit.</summary>
internal sealed class CircuitTransitions
{
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The circuit opened or closed.</summary>
    public ValueTask Changed()
    {
        Interlocked.Exchange(ref _changed, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        return default;
    }

    /// <summary>Completes once <paramref name="circuit"/> is not half-open (its trial has been judged).</summary>
    public async Task WhileHalfOpenAsync(CircuitBreakerStateProvider circuit)
    {
        while (true)
        {
            // The signal first, then the state: a transition in between completes the signal read.
            var changed = Volatile.Read(ref _changed).Task;
            if (circuit.CircuitState != CircuitState.HalfOpen)
            {
                return;
            }

            await changed.ConfigureAwait(false);
        }
    }
}
