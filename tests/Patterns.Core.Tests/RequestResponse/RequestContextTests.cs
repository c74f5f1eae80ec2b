using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.RequestResponse;

namespace Patterns.Core.Tests.RequestResponse;

public sealed record PriceOf(string Symbol) : IRequest<Price>;

public sealed record Price(string Symbol, decimal Amount);

public sealed record PriceLooked(string Symbol);

public sealed class PriceOfHandler : IRequestContextHandler<PriceOf, Price>
{
    public async ValueTask<Price> HandleAsync(PriceOf request, RequestContext context, CancellationToken cancellationToken)
    {
        context.Headers.TryGetValue("tenant", out var tenant);
        context.ResponseHeaders["tenant-seen"] = tenant ?? "none";
        context.ResponseHeaders["correlation"] = context.CorrelationId.ToString();
        await context.PublishAsync("prices.looked", new PriceLooked(request.Symbol), cancellationToken);
        return new Price(request.Symbol, 7m);
    }
}

public sealed class PlainPriceHandler : IRequestHandler<PriceOf, Price>
{
    public ValueTask<Price> HandleAsync(PriceOf request, CancellationToken cancellationToken) => new(new Price(request.Symbol, 1m));
}

public abstract class RequestContextTestsBase
{
    private static readonly Guid Correlation = Guid.Parse("0b5c6a52-38b4-4d55-9c1f-2fbd3c3f0a11");

    protected abstract bool InProcess { get; }

    [Fact]
    public async Task SendAsync_RequestNamesItsResponse_InfersTheResponseType()
    {
        using var host = await StartAsync(r => r.AddHandler<PriceOf, Price, PlainPriceHandler>());

        Price price = await Client(host).SendAsync(new PriceOf("MSFT"));

        price.Should().Be(new Price("MSFT", 1m));
    }

    [Fact]
    public async Task SendAsync_InferredRequestWithTimeout_UsesTheRuntimeRequestType()
    {
        using var host = await StartAsync(r => r.AddHandler<PriceOf, Price, PlainPriceHandler>());
        IRequest<Price> request = new PriceOf("A");

        var price = await Client(host).SendAsync(request, TimeSpan.FromSeconds(30));

        price.Amount.Should().Be(1m);
    }

    [Fact]
    public async Task SendAsync_InferredRequestWithoutHandler_NamesTheRequestType()
    {
        using var host = await StartAsync(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());

        var act = async () => await Client(host).SendAsync(new PriceOf("A"));

        (await act.Should().ThrowAsync<HandlerNotFoundException>()).Which.Message.Should().Contain(typeof(PriceOf).FullName!);
    }

    [Fact]
    public async Task GetResponseAsync_ContextHandler_SeesRequestHeadersAndCorrelationAndSetsResponseHeaders()
    {
        using var host = await StartAsync(r => r.AddHandler<PriceOf, Price, PriceOfHandler>());
        var options = new MessageOptions
        {
            CorrelationId = Correlation,
            Headers = new Dictionary<string, string> { ["tenant"] = "acme" },
        };

        var response = await Client(host).GetResponseAsync<PriceOf, Price>(new PriceOf("MSFT"), options);

        response.Message.Should().Be(new Price("MSFT", 7m));
        response.Headers.Should().Contain("tenant-seen", "acme").And.Contain("correlation", Correlation.ToString());
    }

    [Fact]
    public async Task SendAsync_ContextHandler_FollowUpCarriesTheRequestsCorrelation()
    {
        var seen = new TaskCompletionSource<Guid?>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(
            r => r.AddHandler<PriceOf, Price, PriceOfHandler>(),
            services => services.AddPubSub(p => p.Subscribe<PriceLooked>(
                (m, ctx, ct) =>
                {
                    seen.TrySetResult(ctx.CorrelationId);
                    return ValueTask.CompletedTask;
                },
                "prices.looked")));

        var response = await Client(host).GetResponseAsync<PriceOf, Price>(new PriceOf("X"), new MessageOptions { CorrelationId = Correlation });

        response.Message.Amount.Should().Be(7m);
        (await seen.Task.WaitAsync(TestHost.Wait)).Should().Be(Correlation);
    }

    [Fact]
    public async Task SendAsync_ContextHandlerWithoutOptions_CorrelationIsTheRequestsId()
    {
        using var host = await StartAsync(r => r.AddHandler<PriceOf, Price>((request, context, ct) =>
        {
            context.CorrelationId.Should().Be(context.MessageId);
            // No caller headers; over a transport the request's deadline travels with it as a kernel header.
            context.Headers.Keys.Where(key => key != EnvelopeHeaders.ExpiresAt).Should().BeEmpty();
            context.Services.Should().NotBeNull();
            return new ValueTask<Price>(new Price(request.Symbol, context.MessageId == Guid.Empty ? -1m : 3m));
        }));

        var price = await Client(host).SendAsync(new PriceOf("Z"));

        price.Amount.Should().Be(3m);
    }

    [Fact]
    public async Task GetResponseAsync_PlainHandler_ResponseHasNoHeaders()
    {
        using var host = await StartAsync(r => r.AddHandler<PriceOf, Price, PlainPriceHandler>());

        var response = await Client(host).GetResponseAsync<PriceOf, Price>(new PriceOf("P"), new MessageOptions { Headers = new Dictionary<string, string> { ["a"] = "b" } });

        response.Message.Amount.Should().Be(1m);
        response.Headers.Should().BeEmpty();
    }

    [Fact]
    public async Task ContextHandler_CalledWithoutContext_SaysItNeedsOne()
    {
        IRequestHandler<PriceOf, Price> handler = new PriceOfHandler();

        var act = async () => await handler.HandleAsync(new PriceOf("A"), CancellationToken.None);

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain(nameof(PriceOfHandler)).And.Contain("RequestContext");
    }

    private static IRequestClient Client(IHost host) => host.Services.GetRequiredService<IRequestClient>();

    private Task<IHost> StartAsync(Action<RequestResponseBuilder> configure, Action<IServiceCollection>? more = null) =>
        TestHost.StartAsync(b =>
        {
            b.AddRequestResponse(r =>
            {
                configure(r);
                r.Configure(o => o.PreferInProcessDispatch = InProcess);
            });
            more?.Invoke(b.Services);
        });
}

public sealed class InProcessRequestContextTests : RequestContextTestsBase
{
    protected override bool InProcess => true;
}

public sealed class OverTransportRequestContextTests : RequestContextTestsBase
{
    protected override bool InProcess => false;
}
