using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;

namespace Patterns.Gateway.Tests;

/// <summary>Routes and named policies reloaded again and again while requests are in flight.</summary>
public sealed class ReloadConcurrencyTests
{
    private const int Versions = 8;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Requests to <c>/held/*</c> wait until released; the rest answer the backend's name at once.</summary>
    private sealed class Holds
    {
        private readonly ConcurrentDictionary<string, (TaskCompletionSource Arrived, TaskCompletionSource Release)> _held = new();

        public (TaskCompletionSource Arrived, TaskCompletionSource Release) For(string path) =>
            _held.GetOrAdd(path, _ => (new(TaskCreationOptions.RunContinuationsAsynchronously), new(TaskCreationOptions.RunContinuationsAsynchronously)));

        public Func<HttpContext, Task> Behavior(string name) => async c =>
        {
            if (c.Request.Path.StartsWithSegments("/held"))
            {
                var (arrived, release) = For(c.Request.Path.Value!);
                arrived.TrySetResult();
                await release.Task.WaitAsync(c.RequestAborted);
            }

            await c.Response.WriteAsync(name, c.RequestAborted);
        };

        public void ReleaseAll()
        {
            foreach (var (_, release) in _held.Values)
            {
                release.TrySetResult();
            }
        }
    }

    /// <summary>
    /// Version <paramref name="v"/>: both routes go to backend a (even) or b (odd) and name policies that exist only in this
    /// version (renamed each time), the held route's with a 10 s (even) or 2 s (odd) timeout.
    /// </summary>
    private static void Apply(NamedPolicyTests.MutableConfiguration source, int v, Backend a, Backend b)
    {
        if (v > 0)
        {
            source.Remove($"ResiliencePolicies:p{v - 1}:Timeout");
            source.Remove($"ResiliencePolicies:q{v - 1}:Retry:MaxRetryAttempts");
            source.Remove($"ResiliencePolicies:q{v - 1}:Retry:Delay");
        }

        var cluster = v % 2 == 0 ? "ca" : "cb";
        source.Set("Routes:held:ClusterId", cluster);
        source.Set("Routes:held:Match:Path", "/held/{**rest}");
        source.Set("Routes:held:Metadata:Patterns.ResiliencePolicy", $"p{v}");
        source.Set("Routes:fast:ClusterId", cluster);
        source.Set("Routes:fast:Match:Path", "/fast/{**rest}");
        source.Set("Routes:fast:Metadata:Patterns.ResiliencePolicy", $"q{v}");
        source.Set("Clusters:ca:Destinations:a:Address", a.Address);
        source.Set("Clusters:cb:Destinations:b:Address", b.Address);
        source.Set($"ResiliencePolicies:p{v}:Timeout", v % 2 == 0 ? "00:00:10" : "00:00:02");
        source.Set($"ResiliencePolicies:q{v}:Retry:MaxRetryAttempts", "1");
        source.Set($"ResiliencePolicies:q{v}:Retry:Delay", "00:00:00");
    }

    /// <summary>Counts the configurations YARP applied, and keeps why one failed.</summary>
    private sealed class Applied : Yarp.ReverseProxy.Configuration.IConfigChangeListener
    {
        public SemaphoreSlim Count { get; } = new(0);

        public ConcurrentQueue<string> Failures { get; } = new();

        public void ConfigurationLoadingFailed(Yarp.ReverseProxy.Configuration.IProxyConfigProvider configProvider, Exception exception) => Failures.Enqueue(exception.Message);

        public void ConfigurationLoaded(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs)
        {
        }

        public void ConfigurationApplyingFailed(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs, Exception exception) => Failures.Enqueue(exception.Message);

        public void ConfigurationApplied(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs) => Count.Release();
    }

    [Fact]
    public async Task Reload_RoutesAndRenamedPoliciesUnderLoad_InFlightFinishOnTheirConfig_NewRequestsUseTheNew()
    {
        var time = new FakeTimeProvider();
        var holds = new Holds();
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        a.Behavior = holds.Behavior("a");
        b.Behavior = holds.Behavior("b");
        var source = new NamedPolicyTests.MutableConfiguration([]);
        Apply(source, 0, a, b);
        var config = new ConfigurationBuilder().Add(source).Build();
        var applied = new Applied();
        var logs = new GatewayLogs();
        await using var gateway = await Gateways.FromConfigAsync(config, time, s =>
        {
            s.Services.AddSingleton<Yarp.ReverseProxy.Configuration.IConfigChangeListener>(applied);
            s.Logging.AddProvider(logs);
        });
        (await applied.Count.WaitAsync(Waits.Bound, Ct)).Should().BeTrue("YARP applied the first configuration");
        var registry = gateway.Services.GetRequiredService<ResiliencePolicyRegistry>();

        // Requests all along, on a second client: every one must succeed, whatever version it meets.
        using var stop = new CancellationTokenSource();
        var failures = new ConcurrentQueue<string>();
        var background = Task.Run(async () =>
        {
            using var client = new HttpClient { BaseAddress = new Uri(gateway.Address) };
            var sent = 0;
            while (!stop.IsCancellationRequested && sent++ < 5000)
            {
                using var response = await client.GetAsync("/fast/x", CancellationToken.None);
                var body = await response.Content.ReadAsStringAsync(CancellationToken.None);
                if (response.StatusCode != HttpStatusCode.OK || body is not ("a" or "b"))
                {
                    failures.Enqueue($"{(int)response.StatusCode} {body}");
                }
            }

            return sent;
        }, Ct);

        try
        {
            for (var v = 0; v < Versions; v++)
            {
                var oldBackend = v % 2 == 0 ? "a" : "b";
                var newBackend = v % 2 == 0 ? "b" : "a";
                var path = $"/held/{v}";
                var call = gateway.Client.GetAsync(path, Ct);
                await holds.For(path).Arrived.Task.WaitAsync(Waits.Bound, Ct);

                Apply(source, v + 1, a, b);
                source.Reload();

                // New requests use the new version once YARP applied it (asynchronously, on its own thread).
                var done = await applied.Count.WaitAsync(TimeSpan.FromSeconds(20), Ct);
                applied.Failures.Should().BeEmpty($"YARP must accept version {v + 1} (logs: {string.Join(" | ", logs.Messages.Where(m => m.Contains("onfig", StringComparison.Ordinal)))})");
                done.Should().BeTrue($"YARP applied version {v + 1}");
                var seen = string.Empty;
                for (var i = 0; i < 3 && seen != newBackend; i++)
                {
                    using var response = await gateway.Client.GetAsync($"/fast/{v}", Ct);
                    response.StatusCode.Should().Be(HttpStatusCode.OK, $"version {v + 1}: a request during the reload must not fail");
                    seen = await response.Content.ReadAsStringAsync(Ct);
                }

                seen.Should().Be(newBackend, $"version {v + 1} routes new requests to {newBackend}");
                registry.Current.Find($"p{v + 1}").Should().NotBeNull($"version {v + 1}'s policies are in force");
                registry.Current.Find($"p{v}").Should().BeNull($"version {v + 1} renamed p{v}");

                // The held request keeps its version: its backend, and its policy's timeout (2 s in odd versions, 10 s in even ones).
                time.Advance(TimeSpan.FromSeconds(3));
                if (v % 2 == 1)
                {
                    using var timedOut = await call.WaitAsync(Waits.Bound, Ct);
                    timedOut.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout, $"version {v}'s policy times out after 2 s");
                    System.Text.Json.JsonDocument.Parse(await timedOut.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("detail").GetString()
                        .Should().Be($"Cluster 'cb' did not answer within 00:00:02, the timeout of resilience policy 'p{v}'.");
                }
                else
                {
                    holds.For(path).Release.SetResult();
                    using var answered = await call.WaitAsync(Waits.Bound, Ct);
                    answered.StatusCode.Should().Be(HttpStatusCode.OK, $"version {v}'s policy allows 10 s");
                    (await answered.Content.ReadAsStringAsync(Ct)).Should().Be(oldBackend, "the request was routed by the version it started under");
                }
            }
        }
        finally
        {
            await stop.CancelAsync();
            holds.ReleaseAll();
        }

        var count = await background.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        failures.Should().BeEmpty();
        count.Should().BeGreaterThan(Versions, "requests ran during the reloads");
    }

    /// <summary>
    /// The registry takes the configuration's change tokens before it reads the configuration: a change that lands after the read,
    /// while the set is still being built, has already fired a token the registry holds, so the next read rebuilds. Taking the
    /// tokens after the read would hold fresh tokens that never fire for that change, and the stale set would stay current for good.
    /// Deterministic: the change is made from inside the build (a policy defined in code is configured after the sections are read).
    /// </summary>
    [Fact]
    public void PolicySet_AChangeWhileTheSetIsBuilt_IsSeenByTheNextRead()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ResiliencePolicies:p:Timeout"] = "00:00:01",
        }).Build();
        string? changeDuringBuild = "00:00:02";
        var builds = 0;
        var hook = new ResiliencePolicyConfiguration("hook", _ =>
        {
            builds++;
            if (changeDuringBuild is { } value)
            {
                // The sections were read already: this change is "in between" the read and the set's publication.
                changeDuringBuild = null;
                config["ResiliencePolicies:p:Timeout"] = value;
                config.Reload();
            }
        });
        var registry = new ResiliencePolicyRegistry(
            [new Configuration.GatewaySection(config)], [hook], Microsoft.Extensions.Logging.Abstractions.NullLogger<ResiliencePolicyRegistry>.Instance);

        registry.Current.Find("p")!.Options.Timeout.Should().Be(TimeSpan.FromSeconds(1), "the first build read the section before the change");
        registry.Current.Find("p")!.Options.Timeout.Should().Be(TimeSpan.FromSeconds(2), "the change made during the first build fired a token the registry held");
        builds.Should().Be(2);

        // The same on a rebuild: a reload starts it, and another change lands while it runs.
        changeDuringBuild = "00:00:04";
        config["ResiliencePolicies:p:Timeout"] = "00:00:03";
        config.Reload();
        registry.Current.Find("p")!.Options.Timeout.Should().Be(TimeSpan.FromSeconds(3), "the rebuild read the section before the second change");
        registry.Current.Find("p")!.Options.Timeout.Should().Be(TimeSpan.FromSeconds(4), "the change made during the rebuild is not missed");
        registry.Current.Find("p")!.Options.Timeout.Should().Be(TimeSpan.FromSeconds(4));
        builds.Should().Be(4, "no change since: the last set stays current without a rebuild");
    }
}
