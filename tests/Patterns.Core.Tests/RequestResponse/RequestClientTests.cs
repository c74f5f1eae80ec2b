using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.RequestResponse;
using Patterns.Testing;

namespace Patterns.Core.Tests.RequestResponse;

public sealed record GetQuote(string Symbol);

public sealed record Quote(string Symbol, decimal Price);

public sealed class GetQuoteHandler : IRequestHandler<GetQuote, Quote>
{
    public ValueTask<Quote> HandleAsync(GetQuote request, CancellationToken cancellationToken) =>
        request.Symbol == "BAD"
            ? throw new ArgumentException($"Unknown symbol {request.Symbol}")
            : new(new Quote(request.Symbol, 42m));
}

public sealed record Slow(int Id);

public abstract class RequestClientTestsBase
{
    protected abstract bool InProcess { get; }

    [Fact]
    public async Task SendAsync_RegisteredHandler_ReturnsResponse()
    {
        using var host = await StartAsync(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());

        var quote = await Client(host).SendAsync<GetQuote, Quote>(new GetQuote("MSFT"));

        quote.Should().Be(new Quote("MSFT", 42m));
    }

    [Fact]
    public async Task SendAsync_HandlerThrows_CallerGetsRemoteErrorTypeAndMessage()
    {
        using var host = await StartAsync(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());

        var act = async () => await Client(host).SendAsync<GetQuote, Quote>(new GetQuote("BAD"));

        var failure = (await act.Should().ThrowAsync<RequestFailedException>()).Which;
        failure.RemoteErrorType.Should().Be(typeof(ArgumentException).FullName);
        failure.RemoteMessage.Should().Be("Unknown symbol BAD");
        failure.RequestType.Should().Be(typeof(GetQuote).FullName);
        failure.Message.Should().Contain("System.ArgumentException: Unknown symbol BAD");
    }

    [Fact]
    public async Task SendAsync_NoHandler_FailsFastNamingTheRequestType()
    {
        using var host = await StartAsync(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());

        var act = async () => await Client(host).SendAsync<Slow, Quote>(new Slow(1));

        (await act.Should().ThrowAsync<HandlerNotFoundException>()).Which.Message.Should().Contain(typeof(Slow).FullName!);
    }

    [Fact]
    public async Task SendAsync_HandlerTooSlow_TimesOutOnVirtualTimeAndCancelsHandler()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var handlerStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(r => r.AddHandler<Slow, Quote>(async (request, ct) =>
        {
            handlerStarted.TrySetResult();
            using var registration = ct.Register(() => handlerCancelled.TrySetResult());
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
            return new Quote("never", 0);
        }), time);

        // Timers the host already runs count too: wait for one more than those, the request's timeout. Waiting for any one
        // timer could move the clock before the request armed its own, and the request would then never time out.
        var running = time.PendingTimers;
        var pending = Client(host).SendAsync<Slow, Quote>(new Slow(1), TimeSpan.FromSeconds(5)).AsTask();
        await time.WaitForPendingTimersAsync(running + 1).WaitAsync(TestHost.Wait);
        // The handler is running before the clock moves: a request that timed out before it reached its handler would
        // never run it, and there would be nothing to cancel.
        await handlerStarted.Task.WaitAsync(TestHost.Wait);
        pending.IsCompleted.Should().BeFalse();
        fake.Advance(TimeSpan.FromSeconds(5));

        var timeout = (await pending.Invoking(p => p).Should().ThrowAsync<RequestTimeoutException>()).Which;
        timeout.Timeout.Should().Be(TimeSpan.FromSeconds(5));
        timeout.Message.Should().Contain(typeof(Slow).FullName!).And.Contain("00:00:05");
        if (InProcess)
        {
            await handlerCancelled.Task.WaitAsync(TestHost.Wait);
        }
    }

    [Fact]
    public async Task SendAsync_CallerCancels_ThrowsOperationCanceled()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(r => r.AddHandler<Slow, Quote>(async (request, ct) =>
        {
            started.TrySetResult();
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
            return new Quote("never", 0);
        }));
        using var cts = new CancellationTokenSource();

        var pending = Client(host).SendAsync<Slow, Quote>(new Slow(1), cts.Token).AsTask();
        await started.Task.WaitAsync(TestHost.Wait);
        await cts.CancelAsync();

        await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task SendAsync_ManyConcurrentCallers_EachGetsOwnResponse()
    {
        using var host = await StartAsync(r => r.AddHandler<Slow, Quote>(async (request, ct) =>
        {
            await Task.Yield();
            return new Quote(request.Id.ToString(), request.Id);
        }));
        var client = Client(host);

        var responses = await Task.WhenAll(Enumerable.Range(0, 500).Select(i => client.SendAsync<Slow, Quote>(new Slow(i)).AsTask()));

        responses.Select(r => (int)r.Price).Should().Equal(Enumerable.Range(0, 500));
    }

    private static IRequestClient Client(IHost host) => host.Services.GetRequiredService<IRequestClient>();

    private Task<IHost> StartAsync(Action<RequestResponseBuilder> configure, TimeProvider? time = null) =>
        TestHost.StartAsync(b => b.AddRequestResponse(r =>
        {
            configure(r);
            r.Configure(o => o.PreferInProcessDispatch = InProcess);
        }), time);
}

public sealed class InProcessRequestClientTests : RequestClientTestsBase
{
    protected override bool InProcess => true;

    [Fact]
    public async Task SendAsync_SynchronousHandler_CompletesSynchronously()
    {
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>(lifetime: ServiceLifetime.Singleton)));
        var client = host.Services.GetRequiredService<IRequestClient>();

        var pending = client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        pending.IsCompletedSuccessfully.Should().BeTrue("a synchronous handler is called inline, with no thread hop");
        (await pending).Price.Should().Be(42m);
    }

    // The calls below come after a first call, which builds the pair's route: they take the cached direct path.
    [Fact]
    public async Task SendAsync_AfterTheFirstCall_HandlerThrowingSynchronously_SurfacesAsRequestFailedWithItsType()
    {
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>(lifetime: ServiceLifetime.Singleton)));
        var client = host.Services.GetRequiredService<IRequestClient>();
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("A"))).Price.Should().Be(42m);

        for (var i = 0; i < 3; i++)
        {
            var act = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("BAD"));

            var failure = (await act.Should().ThrowAsync<RequestFailedException>()).Which;
            failure.RemoteErrorType.Should().Be(typeof(ArgumentException).FullName);
            failure.InnerException.Should().BeOfType<ArgumentException>();
        }

        (await client.SendAsync<GetQuote, Quote>(new GetQuote("B"))).Symbol.Should().Be("B", "a failed call leaves the thread's timeout source usable");
    }

    [Fact]
    public async Task SendAsync_AfterTheFirstCall_CancelledCallerToken_ThrowsWithoutCallingTheHandler()
    {
        var calls = 0;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) =>
        {
            Interlocked.Increment(ref calls);
            return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
        })));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        var act = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("B"), cts.Token);

        await act.Should().ThrowAsync<OperationCanceledException>();
        calls.Should().Be(1);
    }

    [Fact]
    public async Task SendAsync_AfterTheFirstCall_NullRequest_ThrowsArgumentNull()
    {
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>(lifetime: ServiceLifetime.Singleton)));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        var act = () => client.SendAsync<GetQuote, Quote>(null!);

        act.Should().Throw<ArgumentNullException>();
    }

    [Fact]
    public async Task SendAsync_AfterTheFirstCall_HandlerThatGoesAsynchronous_IsCancelledByTheCaller_AndItsTokenIsNotReused()
    {
        var slowStarted = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var slowCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        CancellationToken lastFast = default;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((q, ct) =>
            {
                lastFast = ct;
                return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
            })
            .AddHandler<Slow, Quote>(async (request, ct) =>
            {
                slowStarted.TrySetResult(ct);
                using var registration = ct.Register(() => slowCancelled.TrySetResult());
                await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                return new Quote("never", 0);
            })));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        using var cts = new CancellationTokenSource();

        // Started on this thread, the slow call takes the token the fast one just used and keeps it.
        var slow = client.SendAsync<Slow, Quote>(new Slow(1), cts.Token).AsTask();
        var slowToken = await slowStarted.Task.WaitAsync(TestHost.Wait);
        var fast = client.SendAsync<GetQuote, Quote>(new GetQuote("B"));
        fast.IsCompletedSuccessfully.Should().BeTrue();
        lastFast.Should().NotBe(slowToken, "a token a running handler holds is never handed to another request");
        await cts.CancelAsync();

        await slow.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
        await slowCancelled.Task.WaitAsync(TestHost.Wait);
        lastFast.IsCancellationRequested.Should().BeFalse();
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("C"))).Symbol.Should().Be("C");
        lastFast.IsCancellationRequested.Should().BeFalse();
    }

    [Fact]
    public async Task SendAsync_AfterTheFirstCall_HandlerThatGoesAsynchronous_TimesOut()
    {
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((q, ct) => new ValueTask<Quote>(new Quote(q.Symbol, 1m)))
            .AddHandler<Slow, Quote>(async (request, ct) =>
            {
                if (request.Id == 0)
                {
                    return new Quote("first", 0);
                }

                using var registration = ct.Register(() => handlerCancelled.TrySetResult());
                await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                return new Quote("never", 0);
            })
            .Configure(o => o.DefaultTimeout = TimeSpan.FromMilliseconds(50))));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        await client.SendAsync<Slow, Quote>(new Slow(0));

        var act = async () => await client.SendAsync<Slow, Quote>(new Slow(1));

        (await act.Should().ThrowAsync<RequestTimeoutException>()).Which.Timeout.Should().Be(TimeSpan.FromMilliseconds(50));
        await handlerCancelled.Task.WaitAsync(TestHost.Wait);
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("B"))).Symbol.Should().Be("B");
    }

    [Fact]
    public async Task SendAsync_NestedRequestInASynchronousHandler_GetsItsOwnToken()
    {
        CancellationToken outer = default;
        CancellationToken inner = default;
        IRequestClient? client = null;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<Slow, Quote>((request, ct) =>
            {
                inner = ct;
                return new ValueTask<Quote>(new Quote("inner", request.Id));
            })
            .AddHandler<GetQuote, Quote>((q, ct) =>
            {
                outer = ct;
                var nested = client!.SendAsync<Slow, Quote>(new Slow(7));
                nested.IsCompletedSuccessfully.Should().BeTrue();
                return new ValueTask<Quote>(new Quote(q.Symbol, nested.Result.Price));
            })));
        client = host.Services.GetRequiredService<IRequestClient>();

        for (var i = 0; i < 3; i++)
        {
            (await client.SendAsync<GetQuote, Quote>(new GetQuote("A"))).Price.Should().Be(7m);
            inner.Should().NotBe(outer);
            inner.CanBeCanceled.Should().BeTrue("the nested request has its own timeout");
        }
    }
}

public sealed class OverTransportRequestClientTests : RequestClientTestsBase
{
    protected override bool InProcess => false;
}

public sealed class RequestTimeoutRangeTests
{
    [Fact]
    public async Task SendAsync_TimeoutLongerThanATimerCanWait_ThrowsNamingTheLimit_AndTheNextCallWorks()
    {
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((q, ct) => new ValueTask<Quote>(new Quote(q.Symbol, 1m)))));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        var act = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("B"), TimeSpan.FromDays(60));

        var failure = (await act.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which;
        failure.ParamName.Should().Be("timeout");
        failure.Message.Should().Contain("at most 4,294,967,294 ms");
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("C"), TimeSpan.FromDays(49))).Symbol.Should().Be("C");
    }

    [Fact]
    public async Task DefaultTimeout_LongerThanATimerCanWait_FailsAtStartNamingTheOption()
    {
        var act = async () =>
        {
            using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
                .AddHandler<GetQuote, Quote>((q, ct) => new ValueTask<Quote>(new Quote(q.Symbol, 1m)))
                .Configure(o => o.DefaultTimeout = TimeSpan.FromDays(60))));
        };

        (await act.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>())
            .Which.Message.Should().Contain("RequestResponseOptions.DefaultTimeout").And.Contain("at most 4,294,967,294 ms");
    }
}
