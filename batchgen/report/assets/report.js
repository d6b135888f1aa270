// batchgen report.html: inlined into the page. The gallery is drawn a page at a time.
(function(){
"use strict";
var data=JSON.parse(document.getElementById("data").textContent);
var items=data.items, common=data.common, PAGE=120;
function str(v){return v===null||v===undefined?"":String(v);}
function params(it){var p={},k;for(k in common)p[k]=common[k];for(k in it.p)p[k]=it.p[k];return p;}
// One lower-case text per item, and its name=value pairs, built once.
items.forEach(function(it){
  var p=params(it),pairs={},words=[],k;
  for(k in p){pairs[k.toLowerCase()]=str(p[k]).toLowerCase();words.push(k.toLowerCase()+"="+str(p[k]).toLowerCase());}
  for(k in it.l){pairs[k.toLowerCase()]=str(it.l[k]).toLowerCase();words.push(k.toLowerCase()+"="+str(it.l[k]).toLowerCase());}
  it._pairs=pairs;it._text=words.join(" ");
});
function matches(it,terms){
  for(var i=0;i<terms.length;i++){
    var t=terms[i],eq=t.indexOf("=");
    if(eq>0){var name=t.slice(0,eq);if(it._pairs[name]!==t.slice(eq+1))return false;}
    else if(it._text.indexOf(t)<0)return false;
  }
  return true;
}
var box=document.getElementById("filter"),grid=document.getElementById("thumbs"),
    more=document.getElementById("more"),count=document.getElementById("count"),shown=[],drawn=0;
function caption(it){
  // The labels, then the parameters that vary between jobs (the prompt aside).
  var bits=[],k;for(k in it.l)bits.push(str(it.l[k]));
  for(k in it.p)if(k!=="prompt")bits.push(k+"="+str(it.p[k]));
  return "#"+str(it.i)+" "+bits.join(" · ");
}
function drawMore(){
  var end=Math.min(drawn+PAGE,shown.length),frag=document.createDocumentFragment();
  for(;drawn<end;drawn++){
    var n=shown[drawn],it=items[n],fig=document.createElement("figure"),img=document.createElement("img"),
        cap=document.createElement("figcaption");
    fig.className="thumb";fig.dataset.i=n;img.loading="lazy";img.alt=str(params(it).prompt);img.src=it.t;
    img.onload=function(){this.dataset.state="loaded";};
    img.onerror=function(){this.dataset.state="error";this.className="broken";this.title="thumbnail missing";};
    cap.textContent=caption(it);cap.title=cap.textContent;fig.appendChild(img);fig.appendChild(cap);frag.appendChild(fig);
  }
  grid.appendChild(frag);
}
function apply(){
  var terms=box.value.toLowerCase().split(/\s+/).filter(Boolean);
  shown=[];for(var i=0;i<items.length;i++)if(matches(items[i],terms))shown.push(i);
  grid.textContent="";drawn=0;drawMore();
  count.textContent=shown.length+" of "+items.length+" images";
  var hash=box.value?"#q="+encodeURIComponent(box.value):"";
  if(location.hash!==hash&&(hash||location.hash.indexOf("#q=")===0))history.replaceState(null,"",hash||location.pathname);
}
if("IntersectionObserver" in window){
  new IntersectionObserver(function(es){if(es[0].isIntersecting&&drawn<shown.length)drawMore();},
    {rootMargin:"800px"}).observe(more);
}else{window.addEventListener("scroll",function(){if(drawn<shown.length)drawMore();});}
// Contact sheets: their thumbnails get a src only when the sheet comes near the view.
function reveal(table){table.querySelectorAll("img[data-src]").forEach(function(img){
  img.src=img.dataset.src;img.removeAttribute("data-src");});}
var tables=document.querySelectorAll("table.grid");
if("IntersectionObserver" in window){
  var watcher=new IntersectionObserver(function(es){es.forEach(function(e){
    if(e.isIntersecting){reveal(e.target);watcher.unobserve(e.target);}});},{rootMargin:"600px"});
  tables.forEach(function(t){watcher.observe(t);});
}else{tables.forEach(reveal);}
var timer=null;box.addEventListener("input",function(){clearTimeout(timer);timer=setTimeout(apply,120);});
if(location.hash.indexOf("#q=")===0)box.value=decodeURIComponent(location.hash.slice(3));
apply();
// The viewer: the image, every parameter and label; the prompt goes to the clipboard.
var viewer=document.getElementById("viewer"),table=document.getElementById("params"),copied=document.getElementById("copied");
function row(k,v){var tr=table.insertRow(),a=tr.insertCell(),b=tr.insertCell();a.textContent=k;b.textContent=str(v);}
function copy(text){
  function fallback(){var t=document.createElement("textarea");t.value=text;document.body.appendChild(t);t.select();
    try{document.execCommand("copy");}catch(e){}document.body.removeChild(t);}
  if(navigator.clipboard&&navigator.clipboard.writeText)navigator.clipboard.writeText(text).catch(fallback);else fallback();
}
function show(n){
  var it=items[n],p=params(it),k;
  document.getElementById("full").src=it.f;document.getElementById("full-link").href=it.f;
  table.textContent="";row("#",it.i);row("file",decodeURIComponent(it.f));
  for(k in it.l)row(k,it.l[k]);for(k in p)row(k,p[k]);
  row("key",it.k);row("request id",it.r);row("inference time",it.s===null?"":it.s+" s");
  copy(str(p.prompt));copied.textContent="Prompt copied to the clipboard.";
  if(viewer.showModal)viewer.showModal();else viewer.setAttribute("open","");
}
document.addEventListener("click",function(ev){
  var el=ev.target.closest("[data-i]");if(!el||el.closest("dialog"))return;ev.preventDefault();show(+el.dataset.i);
});
viewer.addEventListener("click",function(ev){if(ev.target===viewer)viewer.close();});
})();
