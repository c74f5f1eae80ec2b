using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Gateway.Tests;

public sealed class ProtocolTranslationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<KestrelHost> StartAsync(string transport, string test, Action<WebApplicationBuilder> services, Action<WebApplication> endpoints) =>
        await KestrelHost.StartAsync(
            b =>
            {
                TransportUnderTest.Use(b, transport, test);
                services(b);
            },
            endpoints);

    [Theory]
    [MemberData(nameof(TransportUnderTest.All), MemberType = typeof(TransportUnderTest))]
    public async Task MapRequest_ValidBody_AnswersWithHandlersResponse(string transport)
    {
        await using var host = await StartAsync(transport, "rr-ok",
            b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(new Quote(q.Symbol, 101.25m)))),
            app => app.MapRequest<GetQuote, Quote>("/quotes"));

        using var response = await host.Client.PostAsJsonAsync("/quotes", new GetQuote("ACME"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("application/json");
        (await response.Content.ReadFromJsonAsync<Quote>(Ct)).Should().Be(new Quote("ACME", 101.25m));
    }

    [Theory]
    [MemberData(nameof(TransportUnderTest.All), MemberType = typeof(TransportUnderTest))]
    public async Task MapRequest_Errors_AreProblemDetailsWithTheirStatus(string transport)
    {
        var never = new TaskCompletionSource<Quote>();
        await using var host = await StartAsync(transport, "rr-err",
            b => b.AddRequestResponse(r => r
                .AddHandler<GetQuote, Quote>((q, ct) => q.Symbol switch
                {
                    "SLOW" => new ValueTask<Quote>(never.Task.WaitAsync(ct)),
                    "BOOM" => throw new InvalidOperationException("the quote service broke"),
                    _ => ValueTask.FromResult(new Quote(q.Symbol, 1m)),
                })),
            app =>
            {
                // The short (real-time) timeout only on the endpoint whose handler never answers: a handler that does answer
                // (or fails) may take longer than 300 ms on a busy machine, which must not turn its answer into a 504.
                app.MapRequest<GetQuote, Quote>("/quotes", o => o.MaxBodyBytes = 64);
                app.MapRequest<GetQuote, Quote>("/quotes/slow", o => o.Timeout = TimeSpan.FromMilliseconds(300));
                app.MapRequest<Unhandled, Quote>("/unhandled");
            });

        await ExpectProblem(await Post(host, "/quotes", "{\"symbol\":"), 400, "The request body is not a valid message");
        await ExpectProblem(await Post(host, "/quotes", ""), 400, "The request body is empty");
        await ExpectProblem(await Post(host, "/quotes", "symbol=ACME", "application/x-www-form-urlencoded"), 415, "The request body must be JSON");
        await ExpectProblem(await Post(host, "/quotes", "{\"symbol\":\"" + new string('A', 100) + "\"}"), 413, "The request body is too large");
        await ExpectProblem(await Post(host, "/unhandled", "{\"text\":\"x\"}"), 404, "No handler for this message");
        await ExpectProblem(await Post(host, "/quotes/slow", "{\"symbol\":\"SLOW\"}"), 504, "The handler did not answer in time");
        var failed = await ExpectProblem(await Post(host, "/quotes", "{\"symbol\":\"BOOM\"}"), 500, "The handler failed");
        failed.GetProperty("detail").GetString().Should().Contain("the quote service broke");

        // Lets the timed-out handler finish, so the host stops without waiting for its drain deadline.
        never.TrySetResult(new Quote("SLOW", 0m));
    }

    [Fact]
    public async Task MapRequest_TransportUnavailable_Answers503()
    {
        await using var host = await KestrelHost.StartAsync(
            b =>
            {
                b.AddPatterns(p => p.UseTransport(_ => new UnavailableTransport()));
                b.AddRequestResponse(r => r.Configure(o => o.PreferInProcessDispatch = false));
            },
            app => app.MapRequest<GetQuote, Quote>("/quotes"));

        using var response = await Post(host, "/quotes", "{\"symbol\":\"ACME\"}");

        var problem = await ExpectProblem(response, 503, "The transport is unavailable");
        response.Headers.RetryAfter!.Delta.Should().Be(TimeSpan.FromSeconds(1));
        problem.GetProperty("detail").GetString().Should().Contain("broker is down");
    }

    [Theory]
    [MemberData(nameof(TransportUnderTest.All), MemberType = typeof(TransportUnderTest))]
    public async Task MapPublish_Post_Answers202AndSubscriberReceives(string transport)
    {
        var received = new TaskCompletionSource<OrderPlaced>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await StartAsync(transport, "pub",
            b => b.AddPubSub(p => p.Subscribe<OrderPlaced>((m, _, _) => { received.TrySetResult(m); return ValueTask.CompletedTask; }, topic: "orders")),
            app => app.MapPublish<OrderPlaced>("/orders", topic: "orders"));

        using var response = await Post(host, "/orders", "{\"orderId\":\"o-1\",\"lines\":3}");

        response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        (await received.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct)).Should().Be(new OrderPlaced("o-1", 3));
        await ExpectProblem(await Post(host, "/orders", "[1,2"), 400, "The request body is not a valid message");
    }

    [Theory]
    [MemberData(nameof(TransportUnderTest.All), MemberType = typeof(TransportUnderTest))]
    public async Task MapSend_Post_Answers202AndQueueConsumerReceives(string transport)
    {
        var received = new TaskCompletionSource<Ping>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await StartAsync(transport, "send",
            b => b.AddMessageQueue(q => q.AddQueue("pings").AddConsumer<Ping>("pings", (m, _, _) => { received.TrySetResult(m); return ValueTask.CompletedTask; })),
            app => app.MapSend<Ping>("/pings", "pings"));

        using var response = await Post(host, "/pings", "{\"text\":\"hello\"}");

        response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        (await received.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct)).Should().Be(new Ping("hello"));
    }

    private static Task<HttpResponseMessage> Post(KestrelHost host, string path, string body, string contentType = "application/json") =>
        host.Client.PostAsync(path, new StringContent(body, Encoding.UTF8, contentType), Ct);

    internal static async Task<JsonElement> ExpectProblem(HttpResponseMessage response, int status, string title)
    {
        using (response)
        {
            ((int)response.StatusCode).Should().Be(status);
            response.Content.Headers.ContentType!.MediaType.Should().Be("application/problem+json");
            var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement.Clone();
            problem.GetProperty("status").GetInt32().Should().Be(status);
            problem.GetProperty("title").GetString().Should().Be(title);
            problem.GetProperty("type").GetString().Should().StartWith("https://www.rfc-editor.org/");
            return problem;
        }
    }

    /// <summary>A transport whose broker is down.</summary>
    private sealed class UnavailableTransport : MessageTransport
    {
        public override string SystemName => "down";

        public override bool IsInProcess => false;

        public override int MaxPayloadBytes => 1024;

        private static TransportUnavailableException Down() => new("The broker is down.");

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) => throw Down();

        public override ValueTask DisposeAsync() => default;
    }
}
