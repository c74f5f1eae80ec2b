using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Transforms;

namespace Patterns.Gateway.Tests;

/// <summary>Named resilience policies: defined in code and configuration, chosen by routes, checked at load, swapped whole on reload.</summary>
public sealed class NamedPolicyTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task Unavailable(HttpContext c) => ResilienceTests.Unavailable(c);

    /// <summary>One catch-all route naming <paramref name="policy"/>, to a round-robin cluster of the backends.</summary>
    private static (RouteConfig[] Routes, ClusterConfig[] Clusters) Routed(string policy, params Backend[] backends)
    {
        var route = new RouteConfig
        {
            RouteId = "all",
            ClusterId = "c",
            Match = new RouteMatch { Path = "{**rest}" },
            Metadata = new Dictionary<string, string> { [GatewayMetadata.ResiliencePolicy] = policy },
        };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = "RoundRobin",
            Destinations = backends.ToDictionary(b => b.Name, b => new DestinationConfig { Address = b.Address }),
        };
        return ([route], [cluster]);
    }

    private static Task<KestrelHost> StartAsync(
        (RouteConfig[] Routes, ClusterConfig[] Clusters) config, string name, Action<GatewayResiliencePolicy> policy, TimeProvider? time = null) =>
        Gateways.FromCodeAsync(config.Routes, config.Clusters, time, b => b.AddGateway(g => g.AddResiliencePolicy(name, policy)));

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task CodePolicy_IdempotentRequest_MakesOnePlusMaxRetryAttempts(int retries)
    {
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        await using var gateway = await StartAsync(Routed("standard", a, b), "standard", p => p.Retry = new RetryStrategyOptions { MaxRetryAttempts = retries, Delay = TimeSpan.Zero });

        using var response = await gateway.Client.GetAsync("/x", Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (a.Hits + b.Hits).Should().Be(1 + retries);
        Math.Abs(a.Hits - b.Hits).Should().BeLessThanOrEqualTo(1, "no destination is tried twice in a row");
    }

    [Fact]
    public async Task CodePolicy_RouteWithAnAsynchronousTransform_StillRetries()
    {
        // A transform that completes asynchronously: the context reaches the resilience handler through the shared map, not the thread's slot.
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        var (routes, clusters) = Routed("standard", a, b);
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, services: s => s.AddGateway(g => g
            .AddResiliencePolicy("standard", p => p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 2, Delay = TimeSpan.Zero })
            .AddTransforms(t => t.AddRequestTransform(async _ => await Task.Yield()))));

        for (var i = 0; i < 3; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        }

        (a.Hits + b.Hits).Should().Be(9, "each request made its first attempt and two retries");
    }

    [Fact]
    public async Task CodePolicy_PostIsNotRetried()
    {
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        await using var gateway = await StartAsync(Routed("standard", a, b), "standard", p => p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 3, Delay = TimeSpan.Zero });

        using var response = await gateway.Client.PostAsync("/orders", new StringContent("order"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (a.Hits + b.Hits).Should().Be(1);
    }

    [Fact]
    public async Task CodePolicy_RetriesWaitTheExponentialBackoffOnTheTimeProvider()
    {
        var time = new FakeTimeProvider();
        var hits = new ConcurrentQueue<DateTimeOffset>();
        Task Record(HttpContext c)
        {
            hits.Enqueue(time.GetUtcNow());
            return Unavailable(c);
        }

        await using var a = await Backend.StartAsync("a", Record);
        await using var b = await Backend.StartAsync("b", Record);
        await using var gateway = await StartAsync(
            Routed("backoff", a, b), "backoff",
            p => p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 2, Delay = TimeSpan.FromSeconds(1), BackoffType = DelayBackoffType.Exponential, UseJitter = false },
            time);

        var pending = gateway.Client.GetAsync("/x", Ct);
        Waits.Until(() => hits.Count == 1, "the first attempt arrived");
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromMilliseconds(500), pending);
        using var response = await pending;

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        var at = hits.ToArray();
        at.Should().HaveCount(3);
        (at[1] - at[0]).Should().BeGreaterThanOrEqualTo(TimeSpan.FromSeconds(1), "the first retry waits the base delay");
        (at[2] - at[1]).Should().BeGreaterThanOrEqualTo(TimeSpan.FromSeconds(2), "the second waits twice as long");
    }

    [Fact]
    public async Task CodePolicy_CircuitBreaker_OpensThenHalfOpensAfterTheBreakDuration()
    {
        var time = new FakeTimeProvider();
        await using var backend = await Backend.StartAsync("only", Unavailable);
        await using var gateway = await StartAsync(
            Routed("breaker", backend), "breaker",
            p => p.CircuitBreaker = new CircuitBreakerStrategyOptions
            {
                FailureRatio = 0.5, MinimumThroughput = 2, SamplingDuration = TimeSpan.FromSeconds(10), BreakDuration = TimeSpan.FromSeconds(5),
            },
            time);

        async Task<(HttpStatusCode Status, string Body, TimeSpan? RetryAfter)> Get()
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            var body = await response.Content.ReadAsStringAsync(Ct);
            if (response.Content.Headers.ContentType?.MediaType == "application/problem+json")
            {
                body = Detail(body);
            }

            return (response.StatusCode, body, response.Headers.RetryAfter?.Delta);
        }

        // Two failures reach the backend and open the circuit; the third request is answered without it.
        (await Get()).Status.Should().Be(HttpStatusCode.ServiceUnavailable);
        (await Get()).Status.Should().Be(HttpStatusCode.ServiceUnavailable);
        backend.Hits.Should().Be(2);
        var rejected = await Get();
        backend.Hits.Should().Be(2, "an open circuit sends nothing");
        rejected.Status.Should().Be(HttpStatusCode.ServiceUnavailable);
        rejected.RetryAfter.Should().Be(TimeSpan.FromSeconds(5), "the circuit half-opens after the whole break duration, as no virtual time passed");
        rejected.Body.Should().Be("The circuit of every destination tried in cluster 'c' is open (resilience policy 'breaker').");

        // After the break duration one trial goes through (half-open); it fails, so the circuit opens again.
        time.Advance(TimeSpan.FromSeconds(5));
        (await Get()).Status.Should().Be(HttpStatusCode.ServiceUnavailable);
        backend.Hits.Should().Be(3);
        await Get();
        backend.Hits.Should().Be(3, "the failed trial opened the circuit again");

        // The backend recovers: the next trial succeeds and closes the circuit.
        backend.Behavior = null;
        time.Advance(TimeSpan.FromSeconds(5));
        (await Get()).Body.Should().Be("only");
        (await Get()).Body.Should().Be("only");
        backend.Hits.Should().Be(5);
    }

    [Fact]
    public async Task CodePolicy_Timeout_Answers504WithProblemDetailsNamingThePolicy()
    {
        var time = new FakeTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("slow", async c => await release.Task.WaitAsync(c.RequestAborted));
        await using var gateway = await StartAsync(Routed("quick", backend), "quick", p => p.Timeout = TimeSpan.FromSeconds(2), time);
        try
        {
            var pending = gateway.Client.GetAsync("/slow/1", Ct);
            Waits.Until(() => backend.Hits == 1, "the request reached the backend");
            await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(1), pending);
            using var response = await pending;

            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
            response.Content.Headers.ContentType!.MediaType.Should().Be("application/problem+json");
            var problem = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement;
            problem.GetProperty("status").GetInt32().Should().Be(504);
            problem.GetProperty("title").GetString().Should().Be("Gateway Timeout");
            problem.GetProperty("detail").GetString().Should().Be("Cluster 'c' did not answer within 00:00:02, the timeout of resilience policy 'quick'.");
            problem.GetProperty("instance").GetString().Should().Be("/slow/1");
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task CodePolicy_ConcurrencyLimit_RejectsTheRequestOverTheLimitWith503()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("held", async c =>
        {
            await release.Task.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("held", c.RequestAborted);
        });
        await using var gateway = await StartAsync(Routed("one", backend), "one", p => p.MaxConcurrentCalls = 1);

        var first = gateway.Client.GetAsync("/x", Ct);
        Waits.Until(() => backend.Hits == 1, "the first request holds the only permit");
        using (var second = await gateway.Client.GetAsync("/x", Ct))
        {
            second.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
            second.Headers.RetryAfter!.Delta.Should().Be(TimeSpan.FromSeconds(1));
            Detail(await second.Content.ReadAsStringAsync(Ct)).Should().Be("The concurrency limit of 1 running and 0 queued calls is reached (resilience policy 'one').");
        }

        backend.Hits.Should().Be(1);
        release.SetResult();
        using (var answered = await first)
        {
            (await answered.Content.ReadAsStringAsync(Ct)).Should().Be("held");
        }

        using var third = await gateway.Client.GetAsync("/x", Ct);
        third.StatusCode.Should().Be(HttpStatusCode.OK, "the permit came back");
    }

    [Fact]
    public async Task Start_RouteNamingAnUnknownPolicy_FailsNamingTheRouteAndThePolicy()
    {
        await using var a = await Backend.StartAsync("a");
        var message = await Gateways.StartFailureAsync(() => StartAsync(Routed("standrad", a), "standard", p => p.Timeout = TimeSpan.FromSeconds(1)));

        message.Should().Contain("Route 'all': resilience policy 'standrad' is not defined; the policies are standard.");
    }

    [Fact]
    public async Task Start_ConfigPolicyWithBadFields_FailsNamingThePolicyAndEachField()
    {
        await using var a = await Backend.StartAsync("a");
        var config = new ConfigurationBuilder().AddInMemoryCollection(OneRoute("p", a.Address,
            ("ResiliencePolicies:p:Timeout", "soon"),
            ("ResiliencePolicies:p:Retry:MaxRetryAttempt", "2"),
            ("ResiliencePolicies:p:Retry:BackoffType", "Exponentail"),
            ("ResiliencePolicies:p:CircuitBreaker:FailureRatio", "1.5"))).Build();

        var message = await Gateways.StartFailureAsync(() => Gateways.FromConfigAsync(config));

        message.Should().StartWith("Invalid gateway configuration: ");
        message.Should().Contain("Resilience policy 'p': Timeout is 'soon'; it must be a positive duration such as 00:00:05.");
        message.Should().Contain("Resilience policy 'p': 'Retry.MaxRetryAttempt' is not a policy field; the fields here are MaxRetryAttempts, Delay, BackoffType, UseJitter, MaxDelay.");
        message.Should().Contain("Resilience policy 'p': Retry.BackoffType is 'Exponentail'; it must be Constant, Linear or Exponential.");
        message.Should().Contain("Resilience policy 'p': CircuitBreaker.FailureRatio is '1.5'; it must be a number above 0 and at most 1.");
    }

    [Fact]
    public async Task Start_ContradictoryPolicyFields_FailNamingThePolicy()
    {
        await using var a = await Backend.StartAsync("a");
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Routes:r:Metadata:patterns.resiliencepolicy"] = "p",
            ["Clusters:c:Destinations:d:Address"] = a.Address,
            ["ResiliencePolicies:p:Timeout"] = "00:00:02",
            ["ResiliencePolicies:p:AttemptTimeout"] = "00:00:02",
            ["ResiliencePolicies:p:MaxQueuedCalls"] = "5",
        }).Build();

        var message = await Gateways.StartFailureAsync(() => Gateways.FromConfigAsync(config));

        message.Should().Contain("Resilience policy 'p': AttemptTimeout ('00:00:02') is not shorter than Timeout ('00:00:02'); an attempt's timeout must be shorter than the whole request's, or it never applies.");
        message.Should().Contain("Resilience policy 'p': MaxQueuedCalls is '5' but MaxConcurrentCalls is not set; calls queue only behind a concurrency limit, so set MaxConcurrentCalls too.");
    }

    [Fact]
    public async Task ConfigPolicy_CodeAdjustsItAfterConfiguration()
    {
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        var config = Config(a, b, retries: "3");

        await using var gateway = await Gateways.FromConfigAsync(config, services: s => s.AddGateway(g => g.AddResiliencePolicy("p", p => p.Retry!.MaxRetryAttempts = 1)));
        using var response = await gateway.Client.GetAsync("/x", Ct);

        (a.Hits + b.Hits).Should().Be(2, "configuration said 3 retries, the code's delegate ran after it and said 1");
    }

    [Fact]
    public async Task Reload_SwapsThePolicyWhole_AndABadChangeKeepsTheLastGoodOne()
    {
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        var logs = new GatewayLogs();
        var config = Config(a, b, retries: "0");
        await using var gateway = await Gateways.FromConfigAsync(config, services: s => s.Logging.AddProvider(logs));
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();
        var before = registry.Current;

        async Task<int> Attempts()
        {
            var start = a.Hits + b.Hits;
            using var response = await gateway.Client.GetAsync("/x", Ct);
            return a.Hits + b.Hits - start;
        }

        (await Attempts()).Should().Be(1);

        config["ResiliencePolicies:p:Retry:MaxRetryAttempts"] = "2";
        config["ResiliencePolicies:p:Timeout"] = "00:00:30";
        config.Reload();
        (await Attempts()).Should().Be(3, "the next request runs under the new policy");
        var after = registry.Current;
        after.Should().NotBeSameAs(before);
        var merged = after.Find("p")!.Over(Configuration.ClusterPolicy.Default);
        merged.MaxRetries.Should().Be(2);
        merged.Timeout.Should().Be(TimeSpan.FromSeconds(30), "the new set has every new value");

        // A bad change is rejected whole: logged, and the last good policy stays.
        config["ResiliencePolicies:p:Retry:MaxRetryAttempts"] = "0";
        config["ResiliencePolicies:p:Timeout"] = "never";
        config.Reload();
        (await Attempts()).Should().Be(3);
        registry.Current.Should().BeSameAs(after);
        (await logs.WaitForAsync(1310)).Should().Contain("Resilience policy 'p': Timeout is 'never'; it must be a positive duration such as 00:00:05.");
    }

    [Fact]
    public async Task RetryBudget_APlannedRetryThatNeverRuns_GivesItsSlotBack()
    {
        // Polly asks whether to retry after the last attempt too; the slot it planned for that retry must come back,
        // or after three such requests (the budget's floor) the cluster would never retry again.
        var time = new FakeTimeProvider();
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        await using var gateway = await StartAsync(
            Routed("standard", a, b), "standard",
            p =>
            {
                p.Timeout = TimeSpan.FromSeconds(10);
                p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 1, Delay = TimeSpan.Zero };
            },
            time);

        for (var i = 1; i <= 4; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
            (a.Hits + b.Hits).Should().Be(2 * i, $"request {i} made its first attempt and one retry");
        }
    }

    [Fact]
    public async Task AsynchronousTransformThatAnswers_LeavesNoHandedOverContextBehind()
    {
        // An asynchronous transform hands the context over through the shared map; when it answers the request itself
        // YARP sends nothing, so the entry must go when the request ends.
        await using var a = await Backend.StartAsync("a");
        var (routes, clusters) = Routed("standard", a);
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, services: s => s.AddGateway(g => g
            .AddResiliencePolicy("standard", p => p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 1, Delay = TimeSpan.Zero })
            .AddTransforms(t => t.AddRequestTransform(async ctx =>
            {
                await Task.Yield();
                ctx.HttpContext.Response.StatusCode = StatusCodes.Status401Unauthorized;
            }))));

        for (var i = 0; i < 100; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        a.Hits.Should().Be(0);
        Waits.Until(() => ContextHandoff.PendingCount == 0, "every handed-over context was removed when its request ended");
    }

    [Fact]
    public async Task Reload_OfAnUnrelatedKey_KeepsTheConcurrencyLimitsState()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("held", async c =>
        {
            await release.Task.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("held", c.RequestAborted);
        });
        var config = new ConfigurationBuilder().AddInMemoryCollection(OneRoute("p", backend.Address,
            ("ResiliencePolicies:p:MaxConcurrentCalls", "1"),
            ("Unrelated:Level", "Information"))).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();
        var before = registry.Current.Find("p");
        try
        {
            var first = gateway.Client.GetAsync("/x", Ct);
            Waits.Until(() => backend.Hits == 1, "the first request holds the only permit");

            config["Unrelated:Level"] = "Debug";
            config.Reload();
            registry.Current.Find("p").Should().BeSameAs(before, "the policy did not change, so it was not rebuilt");

            using (var second = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
            {
                second.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "the permit is still held across the reload");
            }

            backend.Hits.Should().Be(1);
            release.SetResult();
            using var answered = await first;
            answered.StatusCode.Should().Be(HttpStatusCode.OK);

            // A real change to the policy does build it anew.
            config["ResiliencePolicies:p:MaxConcurrentCalls"] = "2";
            config.Reload();
            registry.Current.Find("p").Should().NotBeSameAs(before);
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task Reload_RemovingAPolicyALiveRouteNames_CarriesItAndTheRouteKeepsIt()
    {
        var time = new FakeTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("slow", async c => await release.Task.WaitAsync(c.RequestAborted));
        var source = new MutableConfiguration(OneRoute("quick", backend.Address,
            ("ResiliencePolicies:quick:Timeout", "00:00:02")));
        var config = new ConfigurationBuilder().Add(source).Build();
        var logs = new GatewayLogs();
        await using var gateway = await Gateways.FromConfigAsync(config, time, s => s.Logging.AddProvider(logs));
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();
        var before = registry.Current;
        try
        {
            source.Remove("ResiliencePolicies:quick:Timeout");
            source.Reload();
            (await logs.WaitForAsync("Route 'r' names resilience policy 'quick'")).Should().Contain(
                "Route 'r' names resilience policy 'quick', which the new policies no longer define; the route keeps it until you remove or change the route.");
            logs.Of(1314).Should().ContainSingle("the carried policy is logged as kept, not as a rejected change").Which.Should().StartWith(
                "Resilience policies the configuration no longer defines are kept for the routes that still name them.");
            logs.Of(1310).Should().BeEmpty();
            registry.Current.Find("quick").Should().BeSameAs(before.Find("quick"), "the route still names the policy, so it keeps the same policy object");
            registry.Current.Carried.Should().Equal("quick");

            var pending = gateway.Client.GetAsync("/slow", Ct);
            Waits.Until(() => backend.Hits == 1, "the request reached the backend");
            await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(1), pending);
            using var response = await pending;
            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task Reload_ANewRouteNamingACarriedPolicy_IsRejectedAsForAnUnknownPolicy()
    {
        await using var backend = await Backend.StartAsync("ok", _ => Task.CompletedTask);
        var source = new MutableConfiguration(OneRoute("quick", backend.Address,
            ("Routes:r:Match:Path", "/r/{**rest}"),
            ("ResiliencePolicies:quick:Timeout", "00:00:02"),
            ("ResiliencePolicies:other:Timeout", "00:00:05")));
        var config = new ConfigurationBuilder().Add(source).Build();
        var logs = new GatewayLogs();
        await using var gateway = await Gateways.FromConfigAsync(config, services: s => s.Logging.AddProvider(logs));
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();
        var lookup = gateway.Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>();

        // One change drops the policy (route r, still served, keeps it: carried) and adds a route r2 naming it.
        source.Remove("ResiliencePolicies:quick:Timeout");
        source.Set("Routes:r2:ClusterId", "c");
        source.Set("Routes:r2:Match:Path", "/r2/{**rest}");
        source.Set("Routes:r2:Metadata:Patterns.ResiliencePolicy", "quick");
        source.Reload();

        (await logs.WaitForAsync("Route 'r2'")).Should().Contain("Route 'r2': resilience policy 'quick' is not defined; the policies are other.");
        lookup.TryGetRoute("r2", out _).Should().BeFalse("YARP rejected the configuration with the new route and kept the last good one");
        lookup.TryGetRoute("r", out _).Should().BeTrue();
        registry.Current.Carried.Should().Equal("quick");
    }

    [Fact]
    public async Task Reload_RenamingAPolicy_ARequestAlreadyMatchedByTheOldRouteKeepsTheOldPolicyAfterThePrune()
    {
        var time = new FakeTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("slow", async c => await release.Task.WaitAsync(c.RequestAborted));
        var source = new MutableConfiguration(OneRoute("old", backend.Address,
            ("ResiliencePolicies:old:Timeout", "00:00:02")));
        var config = new ConfigurationBuilder().Add(source).Build();
        await using var gateway = await Gateways.FromConfigAsync(config, time, app: a => a.Use(async (HttpContext c, RequestDelegate next) =>
        {
            // Holds the request after routing chose the old route, before the proxy pipeline reads its policy.
            if (c.Request.Path == "/held")
            {
                held.TrySetResult();
                await gate.Task;
            }

            await next(c);
        }));
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();
        var lookup = gateway.Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>();
        try
        {
            var pending = gateway.Client.GetAsync("/held", Ct);
            await held.Task.WaitAsync(Ct);

            source.Remove("ResiliencePolicies:old:Timeout");
            source.Set("ResiliencePolicies:new:Timeout", "00:10:00");
            source.Set("Routes:r:Metadata:Patterns.ResiliencePolicy", "new");
            source.Reload();
            Waits.Until(
                () => lookup.TryGetRoute("r", out var route) && route.Config.Metadata!["Patterns.ResiliencePolicy"] == "new" && registry.Current.Find("old") is null,
                "YARP applied the renamed route and the prune dropped the old policy");

            gate.SetResult();
            Waits.Until(() => backend.Hits == 1, "the held request reached the backend");
            await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(1), pending);
            pending.IsCompleted.Should().BeTrue("the request was matched by the old route, so it keeps the old policy's 2 s timeout (the new one's is 10 min)");
            using var response = await pending;
            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
        }
        finally
        {
            gate.TrySetResult();
            release.TrySetResult();
        }
    }

    [Fact]
    public void OneRequest_SeesOnePolicySet_EvenAcrossAReload()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ResiliencePolicies:p:Timeout"] = "00:00:01",
        }).Build();
        var registry = new ResiliencePolicyRegistry(
            [new Configuration.GatewaySection(config)], [], Microsoft.Extensions.Logging.Abstractions.NullLogger<ResiliencePolicyRegistry>.Instance);
        var route = new RouteConfig { RouteId = "r", ClusterId = "c", Metadata = new Dictionary<string, string> { [GatewayMetadata.ResiliencePolicy] = "p" } };
        var clusterConfig = new ClusterConfig { ClusterId = "c" };
        using var invoker = new HttpMessageInvoker(new HttpClientHandler());
        var feature = new ProxyFeature(new Yarp.ReverseProxy.Model.RouteModel(route, null, HttpTransformer.Empty), new Yarp.ReverseProxy.Model.ClusterModel(clusterConfig, invoker));
        var request = new DefaultHttpContext();

        Configuration.ClusterPolicy.Effective(feature, registry, request).Timeout.Should().Be(TimeSpan.FromSeconds(1));
        config["ResiliencePolicies:p:Timeout"] = "00:00:02";
        config.Reload();

        Configuration.ClusterPolicy.Effective(feature, registry, request).Timeout.Should().Be(TimeSpan.FromSeconds(1), "the request keeps the set its first read chose");
        Configuration.ClusterPolicy.Effective(feature, registry, new DefaultHttpContext()).Timeout.Should().Be(TimeSpan.FromSeconds(2), "a new request reads the new set");
    }

    private sealed class ProxyFeature(Yarp.ReverseProxy.Model.RouteModel route, Yarp.ReverseProxy.Model.ClusterModel cluster) : Yarp.ReverseProxy.Model.IReverseProxyFeature
    {
        public Yarp.ReverseProxy.Model.RouteModel Route => route;

        public Yarp.ReverseProxy.Model.ClusterModel Cluster { get; set; } = cluster;

        public IReadOnlyList<Yarp.ReverseProxy.Model.DestinationState> AllDestinations { get; set; } = [];

        public IReadOnlyList<Yarp.ReverseProxy.Model.DestinationState> AvailableDestinations { get; set; } = [];

        public Yarp.ReverseProxy.Model.DestinationState? ProxiedDestination { get; set; }
    }

    /// <summary>The configuration keys of one catch-all route 'r' naming <paramref name="policy"/>, to a cluster 'c' of one destination 'd', and <paramref name="more"/>.</summary>
    internal static Dictionary<string, string?> OneRoute(string policy, string address, params (string Key, string? Value)[] more)
    {
        var keys = new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Routes:r:Metadata:Patterns.ResiliencePolicy"] = policy,
            ["Clusters:c:Destinations:d:Address"] = address,
        };
        foreach (var (key, value) in more)
        {
            keys[key] = value;
        }

        return keys;
    }

    /// <summary>In-memory configuration whose keys can be removed, not only set.</summary>
    internal sealed class MutableConfiguration(Dictionary<string, string?> data) : ConfigurationProvider, IConfigurationSource
    {
        public override void Load()
        {
            foreach (var (key, value) in data)
            {
                Data[key] = value;
            }
        }

        public void Remove(string key) => Data.Remove(key);

        public void Reload() => OnReload();

        public IConfigurationProvider Build(IConfigurationBuilder builder) => this;
    }

    private static string Detail(string problem) =>
        System.Text.Json.JsonDocument.Parse(problem).RootElement.GetProperty("detail").GetString()!;

    private static IConfigurationRoot Config(Backend a, Backend b, string retries) =>
        new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Routes:r:Metadata:Patterns.ResiliencePolicy"] = "p",
            ["Clusters:c:LoadBalancingPolicy"] = "RoundRobin",
            ["Clusters:c:Destinations:a:Address"] = a.Address,
            ["Clusters:c:Destinations:b:Address"] = b.Address,
            ["ResiliencePolicies:p:Retry:MaxRetryAttempts"] = retries,
            ["ResiliencePolicies:p:Retry:Delay"] = "00:00:00",
        }).Build();
}
