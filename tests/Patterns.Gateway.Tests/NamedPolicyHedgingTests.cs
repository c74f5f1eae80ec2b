using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Tests;

/// <summary>Hedging in named resilience policies: the first good answer wins, the losers are cancelled, only idempotent bodiless requests are hedged.</summary>
public sealed class NamedPolicyHedgingTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A backend that signals when a request arrives and when its client cancels it, and answers only once released.</summary>
    private sealed class Held
    {
        public TaskCompletionSource Arrived { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Aborted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task Handle(HttpContext c)
        {
            Arrived.TrySetResult();
            try
            {
                await Release.Task.WaitAsync(c.RequestAborted);
            }
            catch (OperationCanceledException) when (c.RequestAborted.IsCancellationRequested)
            {
                Aborted.TrySetResult();
                throw;
            }

            await c.Response.WriteAsync("held", c.RequestAborted);
        }
    }

    /// <summary>One catch-all route naming <paramref name="policy"/>, to a cluster whose balancer always picks the first destination by name.</summary>
    private static (RouteConfig[] Routes, ClusterConfig[] Clusters) FirstAlphabetical(string policy, params Backend[] backends) =>
        ([new RouteConfig
        {
            RouteId = "all",
            ClusterId = "c",
            Match = new RouteMatch { Path = "{**rest}" },
            Metadata = new Dictionary<string, string> { [GatewayMetadata.ResiliencePolicy] = policy },
        }],
        [new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = "FirstAlphabetical",
            Destinations = backends.ToDictionary(b => b.Name, b => new DestinationConfig { Address = b.Address }),
        }]);

    [Fact]
    public async Task CodePolicy_SlowFirstDestination_FastHedgeWinsAfterTheDelay_AndTheSlowAttemptIsCancelled()
    {
        var time = new FakeTimeProvider();
        var held = new Held();
        await using var slow = await Backend.StartAsync("a-slow", held.Handle);
        await using var fast = await Backend.StartAsync("b-fast");
        var (routes, clusters) = FirstAlphabetical("hedged", slow, fast);
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, time, b => b.AddGateway(g => g.AddResiliencePolicy("hedged", p => p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.FromSeconds(1) })));
        try
        {
            var call = gateway.Client.GetAsync("/items/1", Ct);
            await held.Arrived.Task.WaitAsync(Waits.Bound, Ct);
            fast.Hits.Should().Be(0, "the hedge waits for the delay, which has not passed on the fake clock");

            await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(1), call);
            using var response = await call.WaitAsync(Waits.Bound, Ct);

            response.StatusCode.Should().Be(HttpStatusCode.OK);
            (await response.Content.ReadAsStringAsync(Ct)).Should().Be("b-fast");
            await held.Aborted.Task.WaitAsync(Waits.Bound, Ct);
            slow.Hits.Should().Be(1);
            fast.Hits.Should().Be(1);
            fast.Received.Single().Path.Should().Be("/items/1", "the hedge is the same request, sent to another destination");
        }
        finally
        {
            held.Release.TrySetResult();
        }
    }

    [Fact]
    public async Task Hedging_TheCancelledLoser_IsNotCountedAsAFailureByOutlierDetection()
    {
        var held = new Held();
        var logs = new GatewayLogs();
        await using var slow = await Backend.StartAsync("a-slow", held.Handle);
        // b-fast answers only once the primary attempt reached a-slow, so the primary is the loser, cancelled while running.
        await using var fast = await Backend.StartAsync("b-fast", async c =>
        {
            await held.Arrived.Task.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("b-fast", c.RequestAborted);
        });
        var (routes, clusters) = FirstAlphabetical("hedged", slow, fast);
        clusters[0] = clusters[0] with
        {
            Metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" },
            HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
        };
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, services: b =>
            {
                b.Logging.AddProvider(logs);
                b.AddGateway(g => g.AddResiliencePolicy("hedged", p => p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.Zero }));
            });
        try
        {
            using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
            (await response.Content.ReadAsStringAsync(Ct)).Should().Be("b-fast");
            await held.Aborted.Task.WaitAsync(Waits.Bound, Ct);

            // One failure would eject a-slow (ConsecutiveFailures 1): its attempt was cancelled by the winning hedge, not failed.
            SpinWait.SpinUntil(() => logs.Of(1301).Count > 0, TimeSpan.FromMilliseconds(500)).Should().BeFalse(
                "the loser was cancelled; {0}", string.Join(" ", logs.Of(1301)));
            var cluster = gateway.Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>().GetClusters().Single();
            cluster.DestinationsState.AvailableDestinations.Should().HaveCount(2);
        }
        finally
        {
            held.Release.TrySetResult();
        }
    }

    [Fact]
    public async Task Hedging_TheCancelledLoser_IsNotCountedByTheCircuitBreaker()
    {
        // Each request's primary reaches a-slow, which holds it; b-fast answers only then, so the primary loses and is
        // cancelled. Two cancelled losers would be two failures in two attempts, over the ratio: the third primary would meet
        // an open circuit and never reach a-slow.
        var arrived = new SemaphoreSlim(0);
        await using var slow = await Backend.StartAsync("a-slow", async c =>
        {
            arrived.Release();
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        await using var fast = await Backend.StartAsync("b-fast", async c =>
        {
            await arrived.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("b-fast", c.RequestAborted);
        });
        var (routes, clusters) = FirstAlphabetical("hedged", slow, fast);
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, services: b => b.AddGateway(g => g.AddResiliencePolicy("hedged", p =>
            {
                p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.Zero };
                p.CircuitBreaker = new Polly.CircuitBreaker.CircuitBreakerStrategyOptions
                {
                    FailureRatio = 0.5,
                    MinimumThroughput = 2,
                    BreakDuration = TimeSpan.FromMinutes(1),
                };
            })));

        for (var i = 0; i < 3; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
            (await response.Content.ReadAsStringAsync(Ct)).Should().Be("b-fast");
        }

        slow.Hits.Should().Be(3, "a cancelled loser is no failure of its destination, so a-slow's circuit stays closed");
    }

    [Fact]
    public async Task Hedging_HedgesSpreadOverTheOtherDestinationsByTheBalancer()
    {
        // The primary attempt always goes to a-slow (first by name), which answers only when cancelled; each request's one hedge
        // wins (with Delay 0 it may answer before the primary even reaches a-slow, so a-slow's hits are not counted).
        await using var slow = await Backend.StartAsync("a-slow", c => Task.Delay(Timeout.Infinite, c.RequestAborted));
        await using var b = await Backend.StartAsync("b");
        await using var c = await Backend.StartAsync("c");
        await using var d = await Backend.StartAsync("d");
        var (routes, clusters) = FirstAlphabetical("hedged", slow, b, c, d);
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, services: builder => builder.AddGateway(g => g.AddResiliencePolicy("hedged", p => p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.Zero })));

        for (var i = 0; i < 9; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        new[] { b.Hits, c.Hits, d.Hits }.Should().Equal([3, 3, 3], "equal weights: the hedges take turns over the other destinations");
    }

    [Fact]
    public async Task ConfigPolicy_GetIsHedged_PostIsNot()
    {
        // Delay zero starts the hedge with the first attempt, so no clock is needed: a hedged request gets the fast answer.
        // b-fast answers only once the primary reached a-slow; otherwise the hedge could win before the primary was sent,
        // and a-slow would never see (nor be aborted from) the request.
        var held = new Held();
        var primary = held;
        await using var slow = await Backend.StartAsync("a-slow", held.Handle);
        await using var fast = await Backend.StartAsync("b-fast", async c =>
        {
            await primary.Arrived.Task.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("b-fast", c.RequestAborted);
        });
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Routes:r:Metadata:Patterns.ResiliencePolicy"] = "hedged",
            ["Clusters:c:LoadBalancingPolicy"] = "FirstAlphabetical",
            ["Clusters:c:Destinations:a-slow:Address"] = slow.Address,
            ["Clusters:c:Destinations:b-fast:Address"] = fast.Address,
            ["ResiliencePolicies:hedged:Hedging:Delay"] = "00:00:00",
            ["ResiliencePolicies:hedged:Hedging:MaxHedgedAttempts"] = "1",
            ["ResiliencePolicies:hedged:Hedging:Methods"] = "GET, HEAD",
        }).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);
        try
        {
            using (var get = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
            {
                (await get.Content.ReadAsStringAsync(Ct)).Should().Be("b-fast");
            }

            await held.Aborted.Task.WaitAsync(Waits.Bound, Ct);
            slow.Hits.Should().Be(1);
            fast.Hits.Should().Be(1);

            // A POST (here without a body, which a hedge could copy) goes to one destination only and waits for its answer.
            held = new Held();
            slow.Behavior = held.Handle;
            var post = gateway.Client.PostAsync("/x", null, Ct);
            await held.Arrived.Task.WaitAsync(Waits.Bound, Ct);
            held.Release.SetResult();
            using var posted = await post.WaitAsync(Waits.Bound, Ct);

            (await posted.Content.ReadAsStringAsync(Ct)).Should().Be("held");
            slow.Hits.Should().Be(2);
            fast.Hits.Should().Be(1, "the POST was not hedged");
        }
        finally
        {
            held.Release.TrySetResult();
        }
    }

    [Fact]
    public async Task Start_BadHedgingInConfiguration_FailsNamingThePolicyAndEachField()
    {
        await using var a = await Backend.StartAsync("a");
        var config = new ConfigurationBuilder().AddInMemoryCollection(NamedPolicyTests.OneRoute("h", a.Address,
            ("ResiliencePolicies:h:Hedging:Delay", "-00:00:01"),
            ("ResiliencePolicies:h:Hedging:MaxHedges", "2"),
            ("ResiliencePolicies:h:Hedging:Methods:0", "GET"),
            ("ResiliencePolicies:h:Hedging:Methods:1", "POST"),
            ("ResiliencePolicies:h:Retry:MaxRetryAttempts", "1"))).Build();

        var message = await Gateways.StartFailureAsync(() => Gateways.FromConfigAsync(config));

        message.Should().StartWith("Invalid gateway configuration: ");
        message.Should().Contain("Resilience policy 'h': Hedging.Delay is '-00:00:01'; it must be a duration such as 00:00:00.200.");
        message.Should().Contain("Resilience policy 'h': 'Hedging.MaxHedges' is not a policy field; the fields here are MaxHedgedAttempts, Delay, Methods.");
        message.Should().Contain("Resilience policy 'h': Hedging.Methods names 'POST', which is not an idempotent method; hedging sends a request more than once, so only GET, HEAD, OPTIONS, TRACE, PUT and DELETE may be hedged.");
        message.Should().Contain("Resilience policy 'h': Retry and Hedging exclude each other; choose retries or hedging.");
    }

    [Fact]
    public async Task Start_HedgingMethodsGivenAsAStringInOneSourceAndAsAListInAnother_FailsNamingThePolicy()
    {
        await using var a = await Backend.StartAsync("a");
        var config = new ConfigurationBuilder()
            .AddInMemoryCollection(NamedPolicyTests.OneRoute("h", a.Address,
                ("ResiliencePolicies:h:Hedging:Methods", "GET")))
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["ResiliencePolicies:h:Hedging:Methods:0"] = " GET ",
                ["ResiliencePolicies:h:Hedging:Methods:1"] = "HEAD",
            })
            .Build();

        var message = await Gateways.StartFailureAsync(() => Gateways.FromConfigAsync(config));

        message.Should().Contain(
            "Resilience policy 'h': Hedging.Methods is given both as a string ('GET') and as a list (GET, HEAD), likely by two configuration sources; give it one way.");
    }

    [Fact]
    public async Task Start_BadHedgingInCode_OrARouteNamingAnUnknownPolicy_FailsNamingThem()
    {
        await using var a = await Backend.StartAsync("a");
        var (routes, clusters) = FirstAlphabetical("hedged", a);
        var message = await Gateways.StartFailureAsync(() => Gateways.FromCodeAsync(
            routes, clusters, services: b => b.AddGateway(g => g.AddResiliencePolicy("hedged", p => p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.FromSeconds(-1), MaxHedgedAttempts = 0 }))));

        message.Should().Contain("Resilience policy 'hedged': Hedging.Delay is '-00:00:01'; it must be from 00:00:00 to 1.00:00:00.");
        message.Should().Contain("Resilience policy 'hedged': Hedging.MaxHedgedAttempts is '0'; it must be a whole number from 1 to 10.");

        var (other, otherClusters) = FirstAlphabetical("hedgd", a);
        message = await Gateways.StartFailureAsync(() => Gateways.FromCodeAsync(
            other, otherClusters, services: b => b.AddGateway(g => g.AddResiliencePolicy("hedged", p => p.Hedging = new GatewayHedgingOptions()))));

        message.Should().Contain("Route 'all': resilience policy 'hedgd' is not defined; the policies are hedged.");

        message = await Gateways.StartFailureAsync(() => Gateways.FromCodeAsync(
            routes, clusters, services: b => b.AddGateway(g => g.AddResiliencePolicy("hedged", p =>
            {
                p.Timeout = TimeSpan.FromSeconds(1);
                p.Hedging = new GatewayHedgingOptions { Delay = TimeSpan.FromSeconds(1) };
            }))));

        message.Should().Contain("Resilience policy 'hedged': Hedging.Delay ('00:00:01') is not shorter than Timeout ('00:00:01'); the request times out before a hedge starts.");
    }
}
