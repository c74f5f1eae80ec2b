using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Health;
using Patterns.Gateway.LoadBalancing;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>
/// The resilience handler over a transport that answers synchronously (a completed task, or a throw before any task is
/// returned): the branches for a first attempt that completed at once, which a socket send never takes.
/// </summary>
public sealed class SynchronousTransportTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Retries_SynchronousAnswers_SuccessReturnedAsItIsFailuresRetriedAndCounted()
    {
        // a's attempts: 503, 200, a synchronous throw, 503; b always answers 200. Two failures in a row eject a.
        var transport = new SynchronousTransport((host, attempt) => host == "a"
            ? attempt switch { 1 or 4 => 503, 3 => throw new HttpRequestException("a refused at once"), _ => 200 }
            : 200);
        await using var gateway = await StartAsync(
            transport, new() { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.OutlierConsecutiveFailures] = "2" });
        var a = Destination(gateway, "a");
        var sent = 0;

        for (var attempt = 1; attempt <= 4; attempt++)
        {
            var statuses = await SendUntilAsync(gateway, transport, "a", attempt);
            sent += statuses.Count;
            statuses.Should().AllBeEquivalentTo(HttpStatusCode.OK, $"a's attempt {attempt} either succeeded or was retried on b");
            transport.Handler!.Budget.Active.Should().Be(0, "every request left the budget");
            if (attempt < 4)
            {
                a.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, $"after a's attempt {attempt} no two failures were in a row (the success in between ended the run)");
            }
        }

        a.Health.Passive.Should().Be(DestinationHealth.Unhealthy, "the synchronous throw and the 503 after it are two failures in a row");
        transport.Count("b").Should().Be(sent - 4 + 3, "b took its own requests and the retries of a's three failed attempts");
    }

    [Fact]
    public async Task OutlierDetectionAlone_SynchronousAnswers_EachCounted()
    {
        // No retries: the handler sends once and counts the outcome. a's attempts: 503, 200, 503, a synchronous throw.
        var transport = new SynchronousTransport((host, attempt) => host == "a"
            ? attempt switch { 1 or 3 => 503, 4 => throw new HttpRequestException("a refused at once"), _ => 200 }
            : 200);
        await using var gateway = await StartAsync(transport, new() { [GatewayMetadata.OutlierConsecutiveFailures] = "2" });
        var a = Destination(gateway, "a");

        (await SendUntilAsync(gateway, transport, "a", 1))[^1].Should().Be(HttpStatusCode.ServiceUnavailable);
        (await SendUntilAsync(gateway, transport, "a", 2))[^1].Should().Be(HttpStatusCode.OK);
        (await SendUntilAsync(gateway, transport, "a", 3))[^1].Should().Be(HttpStatusCode.ServiceUnavailable);
        a.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "the success between the two 503s ended the run");

        (await SendUntilAsync(gateway, transport, "a", 4))[^1].Should().Be(HttpStatusCode.BadGateway, "YARP answers a transport error with 502");
        a.Health.Passive.Should().Be(DestinationHealth.Unhealthy, "the throw after the 503 is the second failure in a row");
    }

    [Fact]
    public async Task Retries_SynchronousNullResponse_TheRequestLeavesTheBudget()
    {
        // A transport that breaks its contract (a completed task with no response) fails the request, and the request
        // still leaves the retry budget it entered: the active count a retry's share is taken of stays right.
        var transport = new SynchronousTransport((host, attempt) => host == "a" && attempt == 1 ? 0 : 200);
        await using var gateway = await StartAsync(transport, new() { [GatewayMetadata.RetryMaxRetries] = "1" });

        (await SendUntilAsync(gateway, transport, "a", 1))[^1].Should().Be(HttpStatusCode.BadGateway);

        transport.Handler!.Budget.Active.Should().Be(0);
    }

    /// <summary>Sends requests until <paramref name="host"/> has had <paramref name="attempts"/> attempts (at most ten); the answers' statuses.</summary>
    private static async Task<List<HttpStatusCode>> SendUntilAsync(KestrelHost gateway, SynchronousTransport transport, string host, int attempts)
    {
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 10 && transport.Count(host) < attempts; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            statuses.Add(response.StatusCode);
        }

        transport.Count(host).Should().Be(attempts);
        return statuses;
    }

    private static DestinationState Destination(KestrelHost gateway, string id) =>
        OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single(d => d.DestinationId == id);

    /// <summary>A gateway with one cluster of destinations a and b, each request sent through the resilience handler to <paramref name="transport"/>.</summary>
    private static Task<KestrelHost> StartAsync(SynchronousTransport transport, Dictionary<string, string> metadata)
    {
        var route = new RouteConfig { RouteId = "r", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            Metadata = metadata,
            HealthCheck = metadata.Keys.Any(k => k.StartsWith("Patterns.Outlier", StringComparison.Ordinal))
                ? new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } }
                : null,
            Destinations = new Dictionary<string, DestinationConfig>
            {
                ["a"] = new() { Address = "http://a.invalid/" },
                ["b"] = new() { Address = "http://b.invalid/" },
            },
        };
        return Gateways.FromCodeAsync(
            [route], [cluster], new FakeTimeProvider(),
            b => b.Services.Replace(ServiceDescriptor.Singleton<IForwarderHttpClientFactory>(s => new SynchronousClientFactory(s, transport))));
    }

    /// <summary>Wraps <see cref="SynchronousTransport"/> in the gateway's <see cref="ResilienceHandler"/>, as the gateway's own factory wraps YARP's socket handler.</summary>
    private sealed class SynchronousClientFactory(IServiceProvider services, SynchronousTransport transport) : IForwarderHttpClientFactory
    {
        public HttpMessageInvoker CreateClient(ForwarderHttpClientContext context)
        {
            var handler = new ResilienceHandler(
                context.ClusterId,
                services.GetRequiredService<IProxyStateLookup>(),
                services.GetRequiredService<WeightedLoadBalancingPolicy>(),
                services.GetRequiredService<OutlierDetector>(),
                services.GetRequiredService<ResiliencePolicyRegistry>(),
                services.GetRequiredService<TimeProvider>(),
                NullLogger.Instance)
            {
                InnerHandler = transport,
            };
            transport.Handler = handler;
            return new HttpMessageInvoker(handler, disposeHandler: true);
        }
    }

    /// <summary>
    /// Answers every request before returning: <paramref name="answer"/> gets the destination's host and its attempt number (from 1)
    /// and gives the status (0 for no response at all) or throws, which the transport does synchronously.
    /// </summary>
    private sealed class SynchronousTransport(Func<string, int, int> answer) : HttpMessageHandler
    {
        private readonly ConcurrentDictionary<string, int> _attempts = new(StringComparer.Ordinal);

        public ResilienceHandler? Handler { get; set; }

        public int Count(string host) => _attempts.GetValueOrDefault(host);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var host = request.RequestUri!.Host.Split('.')[0];
            var status = answer(host, _attempts.AddOrUpdate(host, 1, static (_, n) => n + 1));
            return Task.FromResult(status == 0 ? null! : new HttpResponseMessage((HttpStatusCode)status) { RequestMessage = request });
        }
    }
}
