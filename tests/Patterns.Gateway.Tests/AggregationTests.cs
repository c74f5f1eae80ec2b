using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace Patterns.Gateway.Tests;

public sealed class AggregationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<KestrelHost> StartAsync(Action<AggregateBuilder> configure, TimeProvider? time = null) =>
        KestrelHost.StartAsync(
            b =>
            {
                if (time is not null)
                {
                    b.Services.AddSingleton(time);
                }

                b.AddGateway(g => g.LoadFromMemory([], []));
            },
            app => app.MapAggregate("/profile/{id}", configure));

    [Fact]
    public async Task Get_AllLegsAnswer_MergedJsonWithRouteValuesAndPropagatedHeaders()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        await using var orders = await Backend.StartAsync("orders", Backend.Json("[{\"id\":1},{\"id\":2}]"));
        await using var gateway = await StartAsync(a => a
            .Leg("user", users.Address, "/users/{id}")
            .Leg("orders", orders.Address, "/orders?customer={id}")
            .PropagateHeaders("X-Tenant"));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/profile/42");
        request.Headers.Add("Authorization", "Bearer t");
        request.Headers.Add("X-Tenant", "acme");
        request.Headers.Add("X-Not-Propagated", "no");
        using var response = await gateway.Client.SendAsync(request, Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var json = await response.Content.ReadAsStringAsync(Ct);
        json.Should().Be("{\"user\":{\"name\":\"Ada\"},\"orders\":[{\"id\":1},{\"id\":2}]}");
        users.Received.Single().Path.Should().Be("/users/42");
        orders.Received.Single().Path.Should().Be("/orders?customer=42");
        var headers = users.Received.Single().Headers;
        headers["Authorization"].ToString().Should().Be("Bearer t");
        headers["X-Tenant"].ToString().Should().Be("acme");
        headers.ContainsKey("X-Not-Propagated").Should().BeFalse();
    }

    [Fact]
    public async Task FailingLegWithOmit_PartialAnswerNamesTheLeg()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        await using var orders = await Backend.StartAsync("orders", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        await using var gateway = await StartAsync(a => a
            .Leg("user", users.Address, "/users/{id}")
            .Leg("orders", orders.Address, "/orders", o => o.OnFailure = LegFailurePolicy.Omit));

        using var response = await gateway.Client.GetAsync("/profile/1", Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Headers.GetValues("X-Partial").Should().Equal("orders");
        (await response.Content.ReadAsStringAsync(Ct)).Should().Be("{\"user\":{\"name\":\"Ada\"},\"partial\":true,\"failed\":[\"orders\"]}");
    }

    [Fact]
    public async Task FailingLegWithFail_502ProblemNamesTheLeg()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        await using var orders = await Backend.StartAsync("orders", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        await using var gateway = await StartAsync(a => a
            .Leg("user", users.Address, "/users/{id}")
            .Leg("orders", orders.Address, "/orders"));

        using var response = await gateway.Client.GetAsync("/profile/1", Ct);

        var problem = await ProtocolTranslationTests.ExpectProblem(response, 502, "An aggregate leg failed");
        problem.GetProperty("detail").GetString().Should().Be("Leg 'orders': answered 503.");
    }

    [Fact]
    public async Task LegTimeout_OmitMarksPartial_FailAnswers504()
    {
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        await using var slow = await Backend.StartAsync("slow", async c =>
        {
            arrived.TrySetResult();
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        await using var gateway = await StartAsync(a => a
            .Leg("user", users.Address, "/users/{id}")
            .Leg("recommendations", slow.Address, "/recs", o =>
            {
                o.Timeout = TimeSpan.FromSeconds(2);
                o.OnFailure = LegFailurePolicy.Omit;
            }), time);

        var call = gateway.Client.GetStringAsync("/profile/1", Ct);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);

        // One move of the clock: the leg's timer is armed before its request is sent, so it fires now. Moving on in steps
        // until the answer comes would also time out the user leg (5 s by default) whenever its answer was still on its way.
        time.Advance(TimeSpan.FromSeconds(2));

        (await call.WaitAsync(Waits.Bound, Ct)).Should().Be("{\"user\":{\"name\":\"Ada\"},\"partial\":true,\"failed\":[\"recommendations\"]}");
    }

    [Fact]
    public async Task Post_BodyForwardedToLegsThatAskForIt()
    {
        await using var orders = await Backend.StartAsync("orders", Backend.Json("{\"orderId\":\"o-9\"}"));
        await using var audit = await Backend.StartAsync("audit", Backend.Json("{\"logged\":true}"));
        await using var gateway = await StartAsync(a => a
            .Leg("order", orders.Address, "/orders", o => o.ForwardBody = true)
            .Leg("audit", audit.Address, "/audit/{id}", o => o.Method = "GET"));

        using var response = await gateway.Client.PostAsync("/profile/5", new StringContent("{\"sku\":\"lamp\"}", Encoding.UTF8, "application/json"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("order").GetProperty("orderId").GetString().Should().Be("o-9");
        orders.Received.Single().Method.Should().Be("POST");
        orders.Received.Single().Body.Should().Be("{\"sku\":\"lamp\"}");
        audit.Received.Single().Method.Should().Be("GET");
        audit.Received.Single().Body.Should().BeEmpty();
    }

    [Fact]
    public async Task LegToCluster_UsesTheClustersDestinations()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (users, null));
        await using var gateway = await KestrelHost.StartAsync(
            b => b.AddGateway(g => g.LoadFromMemory(routes, clusters)),
            app =>
            {
                app.MapAggregate("/me/{id}", a => a.Leg("user", "c", "/users/{id}"));
                app.MapGateway();
            });

        (await gateway.Client.GetStringAsync("/me/3", Ct)).Should().Be("{\"user\":{\"name\":\"Ada\"}}");
        users.Received.Single().Path.Should().Be("/users/3");
    }
}
